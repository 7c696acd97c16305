//! Masked fill and dropout on a CUDA device ([`crate::ops::mask`]).

use crate::device::{buf, Device};
use crate::float::Float;
use crate::ops::mask::Mask;
use crate::tensor::Tensor;
use deq_cuda::ops::mask as gpu;
use deq_cuda::{GpuBuffer, IndexBuffer};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// The last mask [`uploaded`] on this thread, with its device.
    static LAST_MASK: RefCell<Option<(Device, Mask, Arc<IndexBuffer>)>> =
        const { RefCell::new(None) };
}

/// `mask` on the device of `x`, uploaded once while it stays the same: attention applies one
/// causal mask on every cell call (each solver iteration, each adjoint VJP), which would
/// otherwise cost a host-to-device copy each time. The last mask uploaded on this thread is
/// kept; a different mask or device replaces it.
fn uploaded<T: Float>(x: &Tensor<T>, xb: &GpuBuffer<T>, mask: &Mask) -> Arc<IndexBuffer> {
    let device = x.device();
    let hit = LAST_MASK.with_borrow(|last| {
        last.as_ref()
            .filter(|(d, m, _)| *d == device && m == mask)
            .map(|(_, _, up)| Arc::clone(up))
    });
    hit.unwrap_or_else(|| {
        let up = Arc::new(gpu::upload_mask(xb.gpu(), mask.data()));
        LAST_MASK.with_borrow_mut(|last| *last = Some((device, mask.clone(), Arc::clone(&up))));
        up
    })
}

/// `value` where `mask` (read through `strides` over `out`) is true, `x` elsewhere; also the
/// mask as uploaded (true = filled, as `i32`), for the backward pass. That buffer is shared
/// with later calls with the same mask while it stays cached.
pub(crate) fn masked_fill<T: Float>(
    x: &Tensor<T>,
    mask: &Mask,
    value: f64,
    out: &[usize],
    strides: &[usize],
) -> (Tensor<T>, Arc<IndexBuffer>) {
    let xb = buf("masked_fill", x);
    let m = uploaded(x, xb, mask);
    let y = gpu::masked_fill(xb, out, &m, strides, value);
    (Tensor::from_gpu(y, out), m)
}

/// `dst (+)= g` where the uploaded `mask` is false, zero elsewhere.
pub(crate) fn masked_fill_backward<T: Float>(
    g: &GpuBuffer<T>,
    mask: &IndexBuffer,
    out: &[usize],
    strides: &[usize],
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::masked_fill_backward(g, out, mask, strides, dst, acc);
}

/// `x ⊙ mask`, the mask read through `strides` over `out`.
pub(crate) fn dropout<T: Float>(
    x: &Tensor<T>,
    mask: &Tensor<T>,
    out: &[usize],
    strides: &[usize],
) -> Tensor<T> {
    let (xb, mb) = (buf("dropout", x), buf("dropout", mask));
    Tensor::from_gpu(gpu::dropout(xb, mb, out, strides), out)
}

/// `dst (+)= g ⊙ mask`.
pub(crate) fn dropout_backward<T: Float>(
    g: &GpuBuffer<T>,
    mask: &Tensor<T>,
    out: &[usize],
    strides: &[usize],
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::mask_mul(g, buf("dropout", mask), out, strides, dst, acc);
}
