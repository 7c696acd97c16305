//! Layer normalisation over the last axis on a CUDA device ([`crate::ops::layer_norm`]).

use crate::device::buf;
use crate::float::Float;
use crate::tensor::Tensor;
use deq_cuda::ops::layer_norm::{self as gpu, AffineParam};
use deq_cuda::GpuBuffer;

const OP: &str = "layer_norm";

/// The normalised rows of length `d` (then `x̂ ⊙ γ + β` with `affine = Some((γ, β))`), and
/// the statistics `[μ_0, r_0, μ_1, ...]`.
pub(crate) fn forward<T: Float>(
    x: &Tensor<T>,
    d: usize,
    affine: Option<(&Tensor<T>, &Tensor<T>)>,
    eps: f64,
) -> (Tensor<T>, GpuBuffer<T>) {
    let params = affine.map(|(g, b)| (buf(OP, g), buf(OP, b)));
    let (y, stats) = gpu::layer_norm(buf(OP, x), d, params, eps);
    (Tensor::from_gpu(y, x.shape()), stats)
}

/// `dst (+)= ∂x`.
pub(crate) fn backward_x<T: Float>(
    g: &GpuBuffer<T>,
    x: &Tensor<T>,
    gamma: Option<&Tensor<T>>,
    stats: &GpuBuffer<T>,
    d: usize,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    let gamma = gamma.map(|t| buf(OP, t));
    gpu::layer_norm_backward_x(g, buf(OP, x), gamma, stats, d, dst, acc);
}

/// `dst (+)= Σ_rows g ⊙ x̂` (`∂γ`, when `beta` is false) or `Σ_rows g` (`∂β`).
pub(crate) fn backward_affine<T: Float>(
    g: &GpuBuffer<T>,
    x: &Tensor<T>,
    stats: &GpuBuffer<T>,
    d: usize,
    beta: bool,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    let param = if beta {
        AffineParam::Beta
    } else {
        AffineParam::Gamma
    };
    gpu::layer_norm_backward_affine(param, g, buf(OP, x), stats, d, dst, acc);
}
