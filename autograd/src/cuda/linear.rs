//! The fused affine map on a CUDA device ([`crate::ops::linear`]).

use crate::device::buf;
use crate::float::Float;
use crate::ops::linear::Dims;
use crate::tensor::Tensor;
use deq_cuda::ops::linear::{self as gpu, LinearShape};
use deq_cuda::GpuBuffer;

fn shape(s: Dims) -> LinearShape {
    LinearShape {
        rows: s.rows,
        inp: s.inp,
        out: s.out,
    }
}

/// `x·Wᵀ + b`, shaped `out`.
pub(crate) fn forward<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    s: Dims,
    out: &[usize],
) -> Tensor<T> {
    let b = bias.map(|b| buf("linear", b));
    let y = gpu::forward(buf("linear", x), buf("linear", w), b, shape(s));
    Tensor::from_gpu(y, out)
}

/// `dst (+)= G·W` (`∂x`).
pub(crate) fn grad_input<T: Float>(
    g: &GpuBuffer<T>,
    w: &Tensor<T>,
    s: Dims,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::grad_input(g, buf("linear", w), shape(s), dst, acc);
}

/// `dst (+)= Gᵀ·x` (`∂W`).
pub(crate) fn grad_weight<T: Float>(
    g: &GpuBuffer<T>,
    x: &Tensor<T>,
    s: Dims,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::grad_weight(g, buf("linear", x), shape(s), dst, acc);
}

/// `dst (+)= Σ_rows G` (`∂b`).
pub(crate) fn grad_bias<T: Float>(g: &GpuBuffer<T>, s: Dims, dst: &mut GpuBuffer<T>, acc: bool) {
    gpu::bias_grad(g, s.rows, s.out, dst, acc);
}
