//! `Tape::vjp_with` in steady state makes no heap allocation: the plan is cached, the ids and
//! the plan key live on the stack, and every gradient buffer comes from the CPU buffer pool
//! and goes back to it. Counted on this thread by a wrapping global allocator.

use deq_autograd::{Rng, Tape, Tensor, Var};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(run: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    run();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn replayed_vjp_with_allocates_nothing() {
    let mut rng = Rng::new(4);
    let tape = Tape::<f64>::new();
    // A small cell: tanh(z Wᵀ + b) · s, a layer norm and a softmax, with broadcasting.
    let w = tape.leaf(Tensor::randn(&[16, 16], 0.3, &mut rng));
    let b = tape.leaf(Tensor::randn(&[16], 0.3, &mut rng));
    let z = tape.leaf(Tensor::randn(&[8, 16], 1.0, &mut rng));
    let y = z
        .linear(&w, Some(&b))
        .tanh()
        .mul_scalar(0.5)
        .add(&z)
        .layer_norm(1e-5)
        .softmax();
    let u = Tensor::randn(&[8, 16], 1.0, &mut rng);
    let mut total = 0.0;
    let mut sweep = |wrt: &[&Var<f64>]| {
        tape.vjp_with(&[&y], &[&u], wrt, |_, g| {
            total += g.map_or(0.0, |g| g[0]);
        })
    };
    // Warm-up: builds the plans and fills the pool with the buffer sizes the sweeps use.
    for _ in 0..3 {
        sweep(&[&z]);
        sweep(&[&z, &w, &b]);
    }
    let n = allocations(|| {
        for _ in 0..20 {
            sweep(&[&z]);
            sweep(&[&z, &w, &b]);
        }
    });
    assert_eq!(n, 0, "40 replayed VJPs made {n} heap allocations");
    assert!(total.is_finite());
}
