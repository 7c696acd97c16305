//! Fused cross-entropy on a CUDA device ([`crate::ops::cross_entropy`]).

use crate::device::buf;
use crate::float::Float;
use crate::tensor::Tensor;
use deq_cuda::GpuBuffer;

/// The mean loss of the `[N, c]` logits against `targets` (already validated), and with
/// `want_grad` the gradient for a unit cotangent, `(softmax(x) − e_t)/N`.
pub(crate) fn forward<T: Float>(
    logits: &Tensor<T>,
    targets: &[usize],
    c: usize,
    want_grad: bool,
) -> (Tensor<T>, Option<GpuBuffer<T>>) {
    let x = buf("cross_entropy", logits);
    let t = deq_cuda::ops::embedding::upload_indices(x.gpu(), targets, "cross_entropy");
    let (loss, unit_grad) = deq_cuda::ops::cross_entropy::cross_entropy(x, &t, c, want_grad);
    (Tensor::from_gpu(loss, &[]), unit_grad)
}

/// `dst (+)= g·unit_grad`, with the scalar cotangent `g` read on the device.
pub(crate) fn backward<T: Float>(
    g: &GpuBuffer<T>,
    unit_grad: &GpuBuffer<T>,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    deq_cuda::ops::elementwise::scale_by_device_scalar(unit_grad, g, dst, acc);
}
