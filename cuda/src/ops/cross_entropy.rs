//! Fused mean cross-entropy over rows of logits, with the gradient formed in the same pass
//! (kernels in `cross_entropy.cu`).
//!
//! Per row `r` with target `t_r`: `lse_r = m + ln Σ e^(x - m)` (`m` the row's max), row loss
//! `lse_r - x[r, t_r]`; the loss is the mean of the row losses, summed in f64 in a fixed order.
//! The gradient of the mean for a unit cotangent, `(softmax(x_r) - e_{t_r}) / N`, is written in
//! the same pass when asked for; scale it by the upstream cotangent with
//! [`scale_by_device_scalar`](super::elementwise::scale_by_device_scalar).

use super::softmax::{row_count, row_launch};
use crate::launch::{launch, Arg};
use crate::{GpuBuffer, GpuFloat, IndexBuffer};
use cudarc::driver::LaunchConfig;

/// Threads of the mean kernel (`CROSS_ENTROPY_MEAN_THREADS` in cross_entropy.cu).
const MEAN_THREADS: u32 = 256;

/// The mean cross-entropy of the rows of `logits` (rows of `cols` values) against `targets`
/// (one class index per row, each in `0..cols`: the caller validates them, the kernel does
/// not), as a one-value buffer; with `want_grad` also the gradient for a unit cotangent, of
/// the shape of `logits`. Panics if the row and target counts differ or `cols` is zero.
pub fn cross_entropy<T: GpuFloat>(
    logits: &GpuBuffer<T>,
    targets: &IndexBuffer,
    cols: usize,
    want_grad: bool,
) -> (GpuBuffer<T>, Option<GpuBuffer<T>>) {
    assert!(cols > 0, "cross_entropy: rows of 0 classes");
    let n_rows = row_count("cross_entropy", logits.len(), cols);
    assert_eq!(
        n_rows,
        targets.len(),
        "cross_entropy: {n_rows} rows of {cols} logits for {} targets",
        targets.len()
    );
    let gpu = logits.gpu();
    let row_loss = gpu.alloc::<T>(n_rows);
    let grad = want_grad.then(|| gpu.alloc::<T>(logits.len()));
    if n_rows > 0 {
        launch::<T>(
            gpu,
            "cross_entropy_rows",
            row_launch(n_rows, cols),
            &[
                Arg::Ptr(logits.ptr()),
                Arg::Ptr(targets.ptr()),
                Arg::Ptr(row_loss.ptr()),
                Arg::Ptr(grad.as_ref().map_or(0, GpuBuffer::ptr)),
                Arg::len(n_rows),
                Arg::len(cols),
                Arg::flag(want_grad),
            ],
        );
    }
    let loss = gpu.alloc::<T>(1);
    let one_block = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (MEAN_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch::<T>(
        gpu,
        "cross_entropy_mean",
        one_block,
        &[
            Arg::Ptr(row_loss.ptr()),
            Arg::Ptr(loss.ptr()),
            Arg::len(n_rows),
        ],
    );
    (loss, grad)
}
