//! Masked fill and dropout on a CUDA device ([`crate::ops::mask`]).

use crate::device::buf;
use crate::float::Float;
use crate::ops::mask::Mask;
use crate::tensor::Tensor;
use deq_cuda::ops::mask as gpu;
use deq_cuda::{GpuBuffer, IndexBuffer};

/// `value` where `mask` (read through `strides` over `out`) is true, `x` elsewhere; also the
/// mask as uploaded (true = filled, as `i32`), for the backward pass.
pub(crate) fn masked_fill<T: Float>(
    x: &Tensor<T>,
    mask: &Mask,
    value: f64,
    out: &[usize],
    strides: &[usize],
) -> (Tensor<T>, IndexBuffer) {
    let xb = buf("masked_fill", x);
    let m = gpu::upload_mask(xb.gpu(), mask.data());
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
