//! Training memory of the implicit layer (f32, counting allocator, a half-size W2 block):
//! the peak does not grow with the forward iteration count, while unrolled backprop grows with
//! depth.

mod cells;

use cells::{transformer_cell, transformer_params};
use deq_autograd::{Rng, Tape, Tensor, Var};
use deq_solvers::{deq, BackwardMode, DeqConfig, SolverConfig, SolverKind, StopMode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn peak_above_entry(f: impl FnOnce()) -> usize {
    deq_autograd::pool::clear();
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

const B: usize = 4;
const T: usize = 64;
const D: usize = 128;
const FF: usize = 512;

/// One training step (forward, loss `Σz²/N`, gradients of every parameter) in `mode`.
fn step(params: &[Tensor<f32>], x: &Tensor<f32>, mode: BackwardMode, f_iters: usize) {
    let solver = |iters| SolverConfig {
        early_stop: false,
        ..SolverConfig::new(
            SolverKind::Broyden { memory: 8 },
            iters,
            1e-6,
            StopMode::Rel,
        )
        .unwrap()
    };
    let cfg = DeqConfig::new(solver(f_iters), solver(8), mode).unwrap();
    let tape = Tape::new();
    let xv = tape.leaf(x.clone());
    let pv: Vec<Var<f32>> = params.iter().map(|p| tape.leaf(p.clone())).collect();
    let out = deq(
        &transformer_cell,
        &xv,
        &pv,
        &Tensor::zeros(&[B, T, D]),
        &cfg,
    );
    let n = out.z.numel() as f64;
    let loss = out.z.mul(&out.z).sum_all().mul_scalar(1.0 / n);
    let wrt: Vec<&Var<f32>> = pv.iter().collect();
    let grads = tape.vjp(&[&loss], &[&Tensor::scalar(1.0)], &wrt);
    assert!(grads.iter().all(Tensor::all_finite));
}

// The only test in this binary, so nothing else allocates while it measures.
#[test]
fn deq_training_memory_is_flat_in_iterations_and_unrolled_grows_with_depth() {
    let mut rng = Rng::new(9);
    let params = transformer_params::<f32>(D, FF, 1.0, &mut rng);
    let x = Tensor::<f32>::randn(&[B, T, D], 1.0, &mut rng);
    // Warm-up: thread pools and lazy statics.
    step(&params, &x, BackwardMode::Implicit, 2);

    // 9 forward iterations fill the ring of 8 pairs (the first adds none), as 64 do.
    let deq8 = peak_above_entry(|| step(&params, &x, BackwardMode::Implicit, 9));
    let deq64 = peak_above_entry(|| step(&params, &x, BackwardMode::Implicit, 64));
    let unrolled8 = peak_above_entry(|| step(&params, &x, BackwardMode::Unrolled { k: 8 }, 1));
    let unrolled16 = peak_above_entry(|| step(&params, &x, BackwardMode::Unrolled { k: 16 }, 1));
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "peak MiB: DEQ 9 iters {:.2}, DEQ 64 iters {:.2}, unrolled 8 {:.2}, unrolled 16 {:.2}; \
         DEQ/unrolled-16 = {:.3}",
        mib(deq8),
        mib(deq64),
        mib(unrolled8),
        mib(unrolled16),
        deq64 as f64 / unrolled16 as f64
    );
    assert!(
        deq64 as f64 <= 1.05 * deq8 as f64,
        "DEQ peak grew with iterations: {deq8} B at 9, {deq64} B at 64"
    );
    assert!(
        unrolled16 as f64 >= 1.7 * unrolled8 as f64,
        "unrolled peak should grow about linearly with depth: {unrolled8} B at 8, {unrolled16} B at 16"
    );
    assert!(
        deq64 < unrolled16 / 3,
        "DEQ {deq64} B vs unrolled-16 {unrolled16} B"
    );
}
