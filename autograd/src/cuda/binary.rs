//! Element-wise arithmetic with broadcasting, and scalar affine maps, on a CUDA device
//! ([`crate::ops::binary`]).

use crate::device::buf;
use crate::float::Float;
use crate::ops::binary::Kind;
use crate::tensor::Tensor;
use deq_cuda::ops::broadcast::{self as gpu, BinaryKind};
use deq_cuda::GpuBuffer;

fn code(kind: Kind) -> BinaryKind {
    match kind {
        Kind::Add => BinaryKind::Add,
        Kind::Sub => BinaryKind::Sub,
        Kind::Mul => BinaryKind::Mul,
        Kind::Div => BinaryKind::Div,
    }
}

/// `a op b`, broadcast to `out`.
pub(crate) fn forward<T: Float>(
    kind: Kind,
    a: &Tensor<T>,
    b: &Tensor<T>,
    out: &[usize],
) -> Tensor<T> {
    let name = kind.name();
    let y = gpu::binary(
        code(kind),
        buf(name, a),
        a.shape(),
        buf(name, b),
        b.shape(),
        out,
    );
    Tensor::from_gpu(y, out)
}

/// `dst (+)= ∂(a op b)/∂(input k) · g`, summed over the axes input `k` was broadcast along.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Float>(
    kind: Kind,
    k: usize,
    g: &GpuBuffer<T>,
    a: &Tensor<T>,
    b: &Tensor<T>,
    out: &[usize],
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    let name = kind.name();
    let a = (buf(name, a), a.shape());
    let b = (buf(name, b), b.shape());
    gpu::binary_backward(code(kind), k, g, a, b, out, dst, acc);
}

/// `scale · x + shift`.
pub(crate) fn affine<T: Float>(x: &Tensor<T>, scale: f64, shift: f64) -> Tensor<T> {
    let y = deq_cuda::ops::elementwise::affine(buf("affine", x), scale, shift);
    Tensor::from_gpu(y, x.shape())
}

/// `dst (+)= scale · g`.
pub(crate) fn scale<T: Float>(g: &GpuBuffer<T>, scale: f64, dst: &mut GpuBuffer<T>, acc: bool) {
    deq_cuda::ops::elementwise::scale_into(g, scale, dst, acc);
}
