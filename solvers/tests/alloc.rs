//! The solver loop allocates nothing per iteration: with `early_stop = false`, 20 more
//! iterations cost exactly 20 more calls of `f`'s own allocations. Counted on this thread by
//! a wrapping global allocator (the states are small, so rayon keeps the work on this thread).

mod common;

use common::kinds;
use deq_autograd::Tensor;
use deq_solvers::{solve, SolverConfig, StopMode};
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

fn f(z: &Tensor<f64>) -> Tensor<f64> {
    z.map(|v| 0.9 * v.cos())
}

#[test]
fn iterations_allocate_only_what_f_allocates() {
    let z0 = Tensor::<f64>::from_fn(&[4, 64], |k| (k as f64).sin());
    // In steady state `f`'s output buffer comes from the CPU pool; what is left is the
    // tensor's reference-counted header.
    drop(f(&z0));
    let per_call = allocations(|| drop(f(&z0)));
    assert!(per_call > 0);
    for kind in kinds() {
        let count = |max_iter: usize| {
            let mut cfg = SolverConfig::new(kind.clone(), max_iter, 1e-6, StopMode::Rel).unwrap();
            cfg.early_stop = false;
            allocations(|| {
                let (z, stats) = solve(&cfg, f, &z0);
                assert_eq!(stats.iterations, max_iter);
                drop((z, stats));
            })
        };
        // Setup makes the same number of allocations in both runs (their sizes differ).
        // The first solves also pay one-time initialisation (rayon's global pool, and the
        // CPU buffer pool's bookkeeping for a buffer size it has not seen yet).
        // Both runs hold the same state sizes (Broyden's memory of 30 caps both), so their
        // setups allocate the same.
        count(30);
        count(50);
        let (short, long) = (count(30), count(50));
        assert_eq!(
            long - short,
            20 * per_call,
            "{kind:?}: {short} vs {long} allocations"
        );
    }
}
