//! The machine's own yardstick: faer's plain sgemm at the W2 linear shapes.
//!
//! `faer::linalg::matmul::matmul` with `Par::rayon(threads)` into a preallocated output, for
//! the four linear layers of the W2 block (`[1024, 256] × [256, 768 | 256 | 1024]` and
//! `[1024, 1024] × [1024, 256]`), median of repetitions per shape, combined FLOP-weighted
//! (total FLOPs over the total of the median times). A workload's efficiency is its nominal
//! GFLOP/s over this figure: it holds on any machine, where absolute times do not.

use super::timing::median;
use faer::{Accum, Mat, Par};
use std::time::Instant;

/// `(m, k, n)` of the four W2 linear products.
pub const SHAPES: [(usize, usize, usize); 4] = [
    (1024, 256, 768),
    (1024, 256, 256),
    (1024, 256, 1024),
    (1024, 1024, 256),
];

/// faer's sgemm GFLOP/s on `threads` threads at [`SHAPES`], FLOP-weighted, with the
/// per-shape figures: the best of three rounds (a round right after start-up, or one that a
/// neighbour on a shared machine disturbs, reads low; the figure is what faer reaches here).
pub fn sgemm_gflops(threads: usize) -> (f64, Vec<f64>) {
    (0..3)
        .map(|_| sgemm_round(threads))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .expect("three rounds")
}

/// One round over the shapes.
fn sgemm_round(threads: usize) -> (f64, Vec<f64>) {
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let (mut flops, mut secs) = (0.0, 0.0);
    let mut each = Vec::new();
    for &(m, k, n) in &SHAPES {
        let a = Mat::<f32>::from_fn(m, k, |i, j| ((i * 7 + j * 3) % 11) as f32 * 0.1 - 0.5);
        let b = Mat::<f32>::from_fn(k, n, |i, j| ((i * 5 + j * 13) % 7) as f32 * 0.1 - 0.3);
        let mut c = Mat::<f32>::zeros(m, n);
        let f = 2.0 * (m * k * n) as f64;
        // Enough repetitions for about 50 ms per shape, after two warm-up products.
        let mut run = || {
            let t = Instant::now();
            faer::linalg::matmul::matmul(
                c.as_mut(),
                Accum::Replace,
                a.as_ref(),
                b.as_ref(),
                1.0,
                par,
            );
            t.elapsed().as_secs_f64()
        };
        run();
        let first = run();
        let reps = ((0.05 / first.max(1e-6)) as usize).clamp(5, 200);
        let mut times: Vec<f64> = (0..reps).map(|_| run()).collect();
        let t = median(&mut times);
        each.push(f / t / 1e9);
        flops += f;
        secs += t;
    }
    (flops / secs / 1e9, each)
}

/// cuBLAS's sgemm GFLOP/s on CUDA device `ordinal` at [`SHAPES`], FLOP-weighted, with the
/// per-shape figures: the GPU's yardstick, measured as faer's is on the CPU (preallocated
/// operands and output, warm-up, median over rounds), so that a GPU workload's efficiency is
/// its nominal GFLOP/s over what cuBLAS itself reaches at the block's shapes. One product
/// takes microseconds there, so each timed round queues [`GPU_BATCH`] products and waits
/// once; the round's time over the batch is one product's.
#[cfg(feature = "cuda")]
pub fn cublas_sgemm_gflops(ordinal: usize) -> Result<(f64, Vec<f64>), String> {
    use deq_cuda::blas::{gemm, Operand};
    let gpu = deq_cuda::Gpu::open(ordinal).map_err(|e| e.to_string())?;
    let (mut flops, mut secs) = (0.0, 0.0);
    let mut each = Vec::new();
    for &(m, k, n) in &SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 * 0.1 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let (a, b) = (gpu.upload(&a), gpu.upload(&b));
        let mut c = gpu.zeros::<f32>(m * n);
        let mut batch = |count: usize| {
            gpu.synchronize();
            let t = Instant::now();
            for _ in 0..count {
                gemm(
                    &mut c,
                    Operand::matrix(&a, m, k, false),
                    Operand::matrix(&b, k, n, false),
                    1,
                    1.0,
                    0.0,
                );
            }
            gpu.synchronize();
            t.elapsed().as_secs_f64() / count as f64
        };
        batch(4);
        let mut rounds: Vec<f64> = (0..GPU_ROUNDS).map(|_| batch(GPU_BATCH)).collect();
        let t = median(&mut rounds);
        let f = 2.0 * (m * k * n) as f64;
        each.push(f / t / 1e9);
        flops += f;
        secs += t;
    }
    Ok((flops / secs / 1e9, each))
}

/// Products queued per timed round on a GPU.
#[cfg(feature = "cuda")]
const GPU_BATCH: usize = 100;

/// Timed rounds per shape on a GPU (the median is kept).
#[cfg(feature = "cuda")]
const GPU_ROUNDS: usize = 7;
