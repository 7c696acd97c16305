//! Timing helpers: medians over repetitions and achieved matmul throughput.

use deq_autograd::matmul_counters;
use std::time::Instant;

/// Wall time in milliseconds and matmul GFLOP of one call of `f`.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, f64, f64) {
    let dev = super::device();
    dev.synchronize();
    let flops0 = matmul_counters().1 + gpu_flops();
    let start = Instant::now();
    let r = f();
    dev.synchronize();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let flops1 = matmul_counters().1 + gpu_flops();
    (r, ms, (flops1 - flops0) as f64 / 1e9)
}

/// The median of `xs` (which must not be empty).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

/// FLOPs of the GEMMs queued on GPUs so far (0 without the `cuda` feature).
fn gpu_flops() -> u64 {
    #[cfg(feature = "cuda")]
    {
        deq_cuda::blas::flop_count()
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}
