//! Sums, means and maxima over an axis, and their VJPs.
//!
//! Every reduction views its input as `[outer, len, inner]` around the reduced axis (a full
//! reduction is `[1, numel, 1]`), like the CPU code. Results are deterministic: each output is
//! combined in a fixed order, never with atomics. A long axis with few outputs is cut into
//! chunks reduced in parallel, then the chunk results are combined in order.

use crate::launch::{launch, linear, row_threads, Arg};
use crate::{GpuBuffer, GpuFloat, IndexBuffer};
use cudarc::driver::LaunchConfig;

/// An `[outer, len, inner]` view around the reduced axis of length `len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisLayout {
    /// Product of the axes before the reduced one.
    pub outer: usize,
    /// Length of the reduced axis.
    pub len: usize,
    /// Product of the axes after it.
    pub inner: usize,
}

impl AxisLayout {
    /// Values of the input.
    pub fn numel(&self) -> usize {
        self.outer * self.len * self.inner
    }

    /// Values of the reduced output.
    pub fn out_numel(&self) -> usize {
        self.outer * self.inner
    }
}

/// How a reduction of `len` values per output, for `outputs` outputs, is cut: `(n_chunks,
/// chunk)`: just enough chunks for about `target` parallel work items (outputs × chunks) in
/// all, but none much shorter than `min_chunk` (at least half of it) and none empty.
pub(crate) fn split(outputs: usize, len: usize, target: usize, min_chunk: usize) -> (usize, usize) {
    let wanted = target.div_ceil(outputs.max(1));
    let most = len.div_ceil(min_chunk.max(1));
    let n = wanted.min(most).max(1);
    let chunk = len.div_ceil(n).max(1);
    (len.div_ceil(chunk).max(1), chunk)
}

/// Parallel work items a chunked reduction aims for: threads for column kernels, blocks for
/// row kernels.
const COL_TARGET: usize = 1 << 16;
const ROW_TARGET: usize = 1 << 10;
/// Smallest chunk: per thread for column kernels, per block for row kernels.
const COL_MIN_CHUNK: usize = 64;
const ROW_MIN_CHUNK: usize = 4096;

/// One block per work item, grid-stride beyond 65535 blocks.
pub(crate) fn blocks(items: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn check_len<T: GpuFloat>(op: &str, buf: &GpuBuffer<T>, want: usize, what: &str) {
    assert_eq!(
        buf.len(),
        want,
        "{op}: {what} has {} values, the layout needs {want}",
        buf.len()
    );
}

/// `scale · Σ` over the middle axis of `l`: `l.outer · l.inner` values, `[outer, inner]`.
/// The sum is formed first and then scaled, as on the CPU (a mean passes `1 / len`).
pub fn sum_axis<T: GpuFloat>(x: &GpuBuffer<T>, l: AxisLayout, scale: f64) -> GpuBuffer<T> {
    check_len("sum_axis", x, l.numel(), "the input");
    let gpu = x.gpu();
    let mut out = gpu.alloc::<T>(l.out_numel());
    if l.out_numel() == 0 {
        return out;
    }
    if l.len == 0 {
        out.fill_zero();
        return out;
    }
    if l.inner == 1 {
        let (n_chunks, chunk) = split(l.outer, l.len, ROW_TARGET, ROW_MIN_CHUNK);
        if n_chunks == 1 {
            sum_rows(x, &mut out, l.outer, l.len, 1, chunk, scale);
        } else {
            let mut part = gpu.alloc::<T>(l.outer * n_chunks);
            sum_rows(x, &mut part, l.outer, l.len, n_chunks, chunk, 1.0);
            sum_rows(&part, &mut out, l.outer, n_chunks, 1, n_chunks, scale);
        }
    } else {
        let (n_chunks, chunk) = split(l.out_numel(), l.len, COL_TARGET, COL_MIN_CHUNK);
        if n_chunks == 1 {
            sum_cols(x, &mut out, l, 1, chunk, scale);
        } else {
            let mut part = gpu.alloc::<T>(l.outer * n_chunks * l.inner);
            sum_cols(x, &mut part, l, n_chunks, chunk, 1.0);
            let again = AxisLayout { len: n_chunks, ..l };
            sum_cols(&part, &mut out, again, 1, n_chunks, scale);
        }
    }
    out
}

fn sum_rows<T: GpuFloat>(
    x: &GpuBuffer<T>,
    out: &mut GpuBuffer<T>,
    rows: usize,
    len: usize,
    n_chunks: usize,
    chunk: usize,
    scale: f64,
) {
    launch::<T>(
        x.gpu(),
        "reduce_sum_rows",
        blocks(rows * n_chunks, row_threads(chunk)),
        &[
            Arg::Ptr(x.ptr()),
            Arg::Ptr(out.ptr()),
            Arg::len(rows),
            Arg::len(len),
            Arg::len(n_chunks),
            Arg::len(chunk),
            Arg::real::<T>(scale),
        ],
    );
}

fn sum_cols<T: GpuFloat>(
    x: &GpuBuffer<T>,
    out: &mut GpuBuffer<T>,
    l: AxisLayout,
    n_chunks: usize,
    chunk: usize,
    scale: f64,
) {
    launch::<T>(
        x.gpu(),
        "reduce_sum_cols",
        linear(l.outer * n_chunks * l.inner),
        &[
            Arg::Ptr(x.ptr()),
            Arg::Ptr(out.ptr()),
            Arg::len(l.outer),
            Arg::len(l.len),
            Arg::len(l.inner),
            Arg::len(n_chunks),
            Arg::len(chunk),
            Arg::real::<T>(scale),
        ],
    );
}

/// VJP of [`sum_axis`]: `dst[o, l, i] (+)= scale · g[o, i]` for every `l` along the axis.
pub fn sum_axis_backward<T: GpuFloat>(
    g: &GpuBuffer<T>,
    l: AxisLayout,
    scale: f64,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    check_len("sum_axis_backward", g, l.out_numel(), "the cotangent");
    check_len("sum_axis_backward", dst, l.numel(), "the destination");
    launch::<T>(
        g.gpu(),
        "reduce_sum_bwd",
        linear(l.numel()),
        &[
            Arg::Ptr(g.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(l.len),
            Arg::len(l.inner),
            Arg::len(l.numel()),
            Arg::real::<T>(scale),
            Arg::flag(acc),
        ],
    );
}

/// Maximum over the middle axis of `l` and the position of the first maximum along the axis
/// (`[outer, inner]` each), with the CPU's rule: a scan from the first entry keeping a value
/// only when strictly larger, so ties go to the first and NaNs are never chosen unless the
/// first entry is NaN. Panics on an empty axis or one longer than `i32::MAX`.
pub fn max_axis<T: GpuFloat>(x: &GpuBuffer<T>, l: AxisLayout) -> (GpuBuffer<T>, IndexBuffer) {
    check_len("max_axis", x, l.numel(), "the input");
    assert!(
        l.len > 0 || l.out_numel() == 0,
        "max_axis: cannot reduce an empty axis ({l:?})"
    );
    assert!(
        l.len <= i32::MAX as usize,
        "max_axis: axis of {} entries is longer than i32::MAX",
        l.len
    );
    let gpu = x.gpu();
    let mut out = gpu.alloc::<T>(l.out_numel());
    let mut arg = gpu.alloc::<i32>(l.out_numel());
    if l.out_numel() == 0 {
        return (out, arg);
    }
    if l.inner > 1 {
        launch::<T>(
            gpu,
            "reduce_max_cols",
            linear(l.out_numel()),
            &[
                Arg::Ptr(x.ptr()),
                Arg::Ptr(out.ptr()),
                Arg::Ptr(arg.ptr()),
                Arg::len(l.outer),
                Arg::len(l.len),
                Arg::len(l.inner),
            ],
        );
        return (out, arg);
    }
    let (n_chunks, chunk) = split(l.outer, l.len, ROW_TARGET, ROW_MIN_CHUNK);
    if n_chunks == 1 {
        max_rows(x, &mut out, &mut arg, l.outer, l.len, 1, chunk);
    } else {
        let mut cand = gpu.alloc::<T>(l.outer * n_chunks);
        let mut cand_i = gpu.alloc::<i32>(l.outer * n_chunks);
        max_rows(x, &mut cand, &mut cand_i, l.outer, l.len, n_chunks, chunk);
        launch::<T>(
            gpu,
            "reduce_max_combine",
            linear(l.outer),
            &[
                Arg::Ptr(cand.ptr()),
                Arg::Ptr(cand_i.ptr()),
                Arg::Ptr(x.ptr()),
                Arg::Ptr(out.ptr()),
                Arg::Ptr(arg.ptr()),
                Arg::len(l.outer),
                Arg::len(l.len),
                Arg::len(n_chunks),
            ],
        );
    }
    (out, arg)
}

fn max_rows<T: GpuFloat>(
    x: &GpuBuffer<T>,
    out: &mut GpuBuffer<T>,
    arg: &mut IndexBuffer,
    rows: usize,
    len: usize,
    n_chunks: usize,
    chunk: usize,
) {
    launch::<T>(
        x.gpu(),
        "reduce_max_rows",
        blocks(rows * n_chunks, row_threads(chunk)),
        &[
            Arg::Ptr(x.ptr()),
            Arg::Ptr(out.ptr()),
            Arg::Ptr(arg.ptr()),
            Arg::len(rows),
            Arg::len(len),
            Arg::len(n_chunks),
            Arg::len(chunk),
        ],
    );
}

/// VJP of [`max_axis`]: `g[o, i]` goes to `dst[o, argmax[o, i], i]`; the other entries get
/// zeros (`acc` false) or stay as they are (`acc` true).
pub fn max_axis_backward<T: GpuFloat>(
    g: &GpuBuffer<T>,
    argmax: &IndexBuffer,
    l: AxisLayout,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    check_len("max_axis_backward", g, l.out_numel(), "the cotangent");
    assert_eq!(
        argmax.len(),
        l.out_numel(),
        "max_axis_backward: {} argmax entries for {} outputs",
        argmax.len(),
        l.out_numel()
    );
    check_len("max_axis_backward", dst, l.numel(), "the destination");
    launch::<T>(
        g.gpu(),
        "reduce_max_bwd",
        linear(l.numel()),
        &[
            Arg::Ptr(g.ptr()),
            Arg::Ptr(argmax.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(l.len),
            Arg::len(l.inner),
            Arg::len(l.numel()),
            Arg::flag(acc),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_covers_the_axis_without_empty_chunks() {
        for &(outputs, len) in &[
            (1, 1),
            (1, 10_000_000),
            (3, 100_000),
            (512, 16_384),
            (100_000, 50),
            (7, 4097),
            (1, 0),
        ] {
            for &(target, min_chunk) in &[(1 << 16, 64), (1 << 10, 4096)] {
                let (n, chunk) = split(outputs, len, target, min_chunk);
                assert!(n >= 1 && chunk >= 1);
                assert!(n * chunk >= len, "{outputs} {len}: {n} × {chunk}");
                assert!((n - 1) * chunk < len.max(1), "{outputs} {len}: empty chunk");
                if n > 1 {
                    assert!(2 * chunk >= min_chunk, "{outputs} {len}: chunk {chunk}");
                }
            }
        }
    }
}
