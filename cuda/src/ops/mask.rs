//! Masked fill and dropout with a given mask, and their VJPs (kernels in `mask.cu`).
//!
//! A mask is broadcast to the input: the caller passes the input's shape and the mask's strides
//! seen through that shape (0 on broadcast axes, as `broadcast_strides` of the engine gives).
//! Axes are coalesced on the host first, so any number of axes works and the common cases (a
//! full mask, a mask broadcast over leading axes) index with one or two axes.

use super::strided::coalesce;
use crate::launch::{launch, linear, Arg, Dims};
use crate::{Gpu, GpuBuffer, GpuFloat, IndexBuffer};

/// Uploads a boolean mask as `i32` zeros and ones (the layout the mask kernels read).
pub fn upload_mask(gpu: &Gpu, mask: &[bool]) -> IndexBuffer {
    let v: Vec<i32> = mask.iter().map(|&b| b as i32).collect();
    gpu.upload(&v)
}

/// The `Dims` of a walk over `shape` reading the mask through `strides` (as stride set a),
/// after checking that every offset lies inside a mask of `mask_len` values.
fn mask_dims(op: &str, shape: &[usize], strides: &[usize], mask_len: usize) -> Box<Dims> {
    assert_eq!(
        shape.len(),
        strides.len(),
        "{op}: {} mask strides for input shape {shape:?}",
        strides.len()
    );
    let last: usize = shape
        .iter()
        .zip(strides)
        .map(|(&n, &k)| n.saturating_sub(1) * k)
        .sum();
    assert!(
        last < mask_len,
        "{op}: mask strides {strides:?} over shape {shape:?} reach offset {last}, the mask has \
         {mask_len} values"
    );
    // Size-1 axes dropped and contiguous or broadcast runs merged (shared with the copies).
    Box::new(coalesce(shape, [strides, &[], &[]]))
}

fn check_numel<T: GpuFloat>(op: &str, buf: &GpuBuffer<T>, shape: &[usize]) -> usize {
    let numel: usize = shape.iter().product();
    assert_eq!(
        buf.len(),
        numel,
        "{op}: buffer of {} values for shape {shape:?}",
        buf.len()
    );
    numel
}

/// `x` with the entries where the broadcast `mask` is true replaced by `value` (into a new
/// buffer); `x` has `shape`, and `mask_strides` are the mask's strides seen through it.
pub fn masked_fill<T: GpuFloat>(
    x: &GpuBuffer<T>,
    shape: &[usize],
    mask: &IndexBuffer,
    mask_strides: &[usize],
    value: f64,
) -> GpuBuffer<T> {
    let n = check_numel("masked_fill", x, shape);
    let y = x.gpu().alloc::<T>(n);
    if n == 0 {
        return y;
    }
    let dims = mask_dims("masked_fill", shape, mask_strides, mask.len());
    launch::<T>(
        x.gpu(),
        "mask_fill_fwd",
        linear(n),
        &[
            Arg::Ptr(x.ptr()),
            Arg::Ptr(mask.ptr()),
            Arg::real::<T>(value),
            Arg::Ptr(y.ptr()),
            Arg::Dims(dims),
            Arg::len(n),
        ],
    );
    y
}

/// The VJP of [`masked_fill`]: `dst (+)= g` where the mask is false, `0` where it is true.
pub fn masked_fill_backward<T: GpuFloat>(
    g: &GpuBuffer<T>,
    shape: &[usize],
    mask: &IndexBuffer,
    mask_strides: &[usize],
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    let n = check_numel("masked_fill_backward", g, shape);
    check_numel("masked_fill_backward", dst, shape);
    if n == 0 {
        return;
    }
    let dims = mask_dims("masked_fill_backward", shape, mask_strides, mask.len());
    launch::<T>(
        g.gpu(),
        "mask_fill_bwd",
        linear(n),
        &[
            Arg::Ptr(g.ptr()),
            Arg::Ptr(mask.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::Dims(dims),
            Arg::len(n),
            Arg::flag(acc),
        ],
    );
}

/// `dst (+)= src ⊙ m`, with the dropout mask `m` broadcast to `shape` through `m_strides`:
/// the VJP of [`dropout`] (and its forward pass with `acc = false`).
pub fn mask_mul<T: GpuFloat>(
    src: &GpuBuffer<T>,
    m: &GpuBuffer<T>,
    shape: &[usize],
    m_strides: &[usize],
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    let n = check_numel("mask_mul", src, shape);
    check_numel("mask_mul", dst, shape);
    if n == 0 {
        return;
    }
    let dims = mask_dims("mask_mul", shape, m_strides, m.len());
    launch::<T>(
        src.gpu(),
        "mask_mul",
        linear(n),
        &[
            Arg::Ptr(src.ptr()),
            Arg::Ptr(m.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::Dims(dims),
            Arg::len(n),
            Arg::flag(acc),
        ],
    );
}

/// `x ⊙ m` into a new buffer, with the dropout mask `m` broadcast to `shape` through
/// `m_strides`.
pub fn dropout<T: GpuFloat>(
    x: &GpuBuffer<T>,
    m: &GpuBuffer<T>,
    shape: &[usize],
    m_strides: &[usize],
) -> GpuBuffer<T> {
    let mut y = x.gpu().alloc::<T>(x.len());
    mask_mul(x, m, shape, m_strides, &mut y, false);
    y
}

#[cfg(test)]
mod tests {
    /// The merged `(sizes, mask strides)` of a walk over `shape`, as `mask_dims` builds it.
    fn coalesce(shape: &[usize], strides: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let d = super::coalesce(shape, [strides, &[], &[]]);
        let n = d.ndim as usize;
        let sizes = d.size[..n].iter().map(|&v| v as usize).collect();
        let steps = d.stride_a[..n].iter().map(|&v| v as usize).collect();
        (sizes, steps)
    }

    #[test]
    fn coalesce_merges_contiguous_and_broadcast_runs() {
        // A full [2, 3, 4] mask is one run of 24.
        assert_eq!(coalesce(&[2, 3, 4], &[12, 4, 1]), (vec![24], vec![1]));
        // A [3, 4] mask broadcast over a leading axis of 2: broadcast axis, then one run.
        assert_eq!(coalesce(&[2, 3, 4], &[0, 4, 1]), (vec![2, 12], vec![0, 1]));
        // A [2, 1, 4] mask over [2, 3, 4]: the middle axis is broadcast.
        assert_eq!(
            coalesce(&[2, 3, 4], &[4, 0, 1]),
            (vec![2, 3, 4], vec![4, 0, 1])
        );
        // Two broadcast axes merge; size-1 axes vanish.
        assert_eq!(
            coalesce(&[5, 1, 3, 7], &[0, 7, 0, 1]),
            (vec![15, 7], vec![0, 1])
        );
        // A scalar.
        assert_eq!(coalesce(&[], &[]), (vec![], vec![]));
    }
}
