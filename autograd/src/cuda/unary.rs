//! Element-wise functions of one tensor on a CUDA device ([`crate::ops::unary`]).

use crate::device::buf;
use crate::float::Float;
use crate::ops::unary::Kind;
use crate::tensor::Tensor;
use deq_cuda::ops::elementwise::{self as gpu, UnaryKind};
use deq_cuda::GpuBuffer;

fn code(kind: Kind) -> UnaryKind {
    match kind {
        Kind::Neg => UnaryKind::Neg,
        Kind::Exp => UnaryKind::Exp,
        Kind::Log => UnaryKind::Log,
        Kind::Tanh => UnaryKind::Tanh,
        Kind::Sigmoid => UnaryKind::Sigmoid,
        Kind::Relu => UnaryKind::Relu,
        Kind::Gelu => UnaryKind::Gelu,
        Kind::Sqrt => UnaryKind::Sqrt,
        Kind::Powi(n) => UnaryKind::Powi(n),
    }
}

/// `f(x)` element-wise.
pub(crate) fn forward<T: Float>(kind: Kind, x: &Tensor<T>) -> Tensor<T> {
    Tensor::from_gpu(gpu::unary(code(kind), buf("unary", x)), x.shape())
}

/// `dst (+)= g · f'(x)` from the input `x` and the output `y`.
pub(crate) fn backward<T: Float>(
    kind: Kind,
    g: &GpuBuffer<T>,
    x: &Tensor<T>,
    y: &Tensor<T>,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::unary_backward(code(kind), g, buf("unary", x), buf("unary", y), dst, acc);
}
