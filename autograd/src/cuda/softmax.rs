//! Softmax and log-softmax over the last axis on a CUDA device ([`crate::ops::softmax`]).

use crate::device::buf;
use crate::float::Float;
use crate::tensor::Tensor;
use deq_cuda::GpuBuffer;

/// `softmax(x)` (or `log_softmax(x)` when `log`) over rows of length `d`.
pub(crate) fn forward<T: Float>(op: &str, x: &Tensor<T>, d: usize, log: bool) -> Tensor<T> {
    Tensor::from_gpu(
        deq_cuda::ops::softmax::softmax(buf(op, x), d, log),
        x.shape(),
    )
}

/// `dst (+)= ∂x` from the output `y` and the cotangent `g`.
pub(crate) fn backward<T: Float>(
    op: &str,
    g: &GpuBuffer<T>,
    y: &Tensor<T>,
    d: usize,
    log: bool,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    deq_cuda::ops::softmax::softmax_backward(g, buf(op, y), d, log, dst, acc);
}
