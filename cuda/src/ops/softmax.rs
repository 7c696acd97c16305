//! Softmax and log-softmax over the last axis, and their VJPs (kernels in `softmax.cu`).
//!
//! Buffers hold rows of `cols` values, row-major. The kernels run one block per row and loop
//! over the columns, so rows may be of any length (10 000 classes are fine).

use crate::launch::{launch, row_threads, Arg};
use crate::{GpuBuffer, GpuFloat};
use cudarc::driver::LaunchConfig;

/// Most blocks of a row launch; the kernels loop over the rows beyond.
const MAX_ROW_BLOCKS: usize = 1 << 20;

/// A launch of one block per row (at most [`MAX_ROW_BLOCKS`]; the row kernels of this family
/// loop over the rest), with enough threads for rows of `cols` values.
pub(crate) fn row_launch(n_rows: usize, cols: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n_rows.clamp(1, MAX_ROW_BLOCKS) as u32, 1, 1),
        block_dim: (row_threads(cols), 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The number of rows of `cols` values in `len` values; panics (naming `op`) unless `cols`
/// divides `len`. Zero columns means zero rows.
pub(crate) fn row_count(op: &str, len: usize, cols: usize) -> usize {
    if cols == 0 {
        assert_eq!(len, 0, "{op}: {len} values in rows of 0 columns");
        return 0;
    }
    assert_eq!(
        len % cols,
        0,
        "{op}: {len} values are not whole rows of {cols} columns"
    );
    len / cols
}

/// Panics (naming `op`) unless the two buffers hold the same number of values.
pub(crate) fn same_len<T: GpuFloat>(op: &str, a: &GpuBuffer<T>, b: &GpuBuffer<T>) {
    assert_eq!(
        a.len(),
        b.len(),
        "{op}: buffers of {} and {} values",
        a.len(),
        b.len()
    );
}

/// Softmax (`log == false`) or log-softmax (`log == true`) of every row of `cols` values,
/// into a new buffer: `m = max`, `lse = m + ln Σ e^(x - m)` (`lse = m` when `m` is not
/// finite), then `e^(x - lse)` or `x - lse`, as on the CPU.
pub fn softmax<T: GpuFloat>(x: &GpuBuffer<T>, cols: usize, log: bool) -> GpuBuffer<T> {
    let n_rows = row_count("softmax", x.len(), cols);
    let y = x.gpu().alloc::<T>(x.len());
    if n_rows == 0 {
        return y;
    }
    launch::<T>(
        x.gpu(),
        "softmax_fwd",
        row_launch(n_rows, cols),
        &[
            Arg::Ptr(x.ptr()),
            Arg::Ptr(y.ptr()),
            Arg::len(n_rows),
            Arg::len(cols),
            Arg::flag(log),
        ],
    );
    y
}

/// The VJP of [`softmax`] from its output `y`: `dst (+)= y ⊙ (g - ⟨g, y⟩)` per row, or for
/// log-softmax `dst (+)= g - e^y · Σg`.
pub fn softmax_backward<T: GpuFloat>(
    g: &GpuBuffer<T>,
    y: &GpuBuffer<T>,
    cols: usize,
    log: bool,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    same_len("softmax_backward", g, y);
    same_len("softmax_backward", g, dst);
    let n_rows = row_count("softmax_backward", g.len(), cols);
    if n_rows == 0 {
        return;
    }
    launch::<T>(
        g.gpu(),
        "softmax_bwd",
        row_launch(n_rows, cols),
        &[
            Arg::Ptr(g.ptr()),
            Arg::Ptr(y.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(n_rows),
            Arg::len(cols),
            Arg::flag(log),
            Arg::flag(acc),
        ],
    );
}
