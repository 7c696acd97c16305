//! Fused layer normalisation over the last axis, with or without an affine map.
//!
//! Forward, per row of length d: `x̂ = (x - μ)·r` with `μ = mean(x)`, `r = 1/√(var(x) + ε)`
//! (biased variance), then `y = x̂ ⊙ γ + β`. VJP, with `ĝ = g ⊙ γ`:
//! `∂x = r·(ĝ - mean(ĝ) - x̂·mean(ĝ ⊙ x̂))`, `∂γ = Σ_rows g ⊙ x̂`, `∂β = Σ_rows g`.

use crate::cpu::layer_norm as kernel;
#[cfg(feature = "cuda")]
use crate::device::{buf, common_device};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

struct LayerNormBackward<T: Float> {
    x: Tensor<T>,
    gamma: Option<Tensor<T>>,
    /// Per-row mean and reciprocal standard deviation.
    stats: Vec<(T, T)>,
    d: usize,
}

impl<T: Float> Backward<T> for LayerNormBackward<T> {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn vjp_in_place(&self, k: usize, g: &mut [T]) -> bool {
        if k != 0 {
            return false;
        }
        let gamma = self.gamma.as_ref().map(|t| t.data());
        kernel::backward_x_in_place(self.x.data(), g, gamma, &self.stats, self.d);
        true
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let (x, d) = (self.x.data(), self.d);
        match k {
            0 => {
                let gamma = self.gamma.as_ref().map(|t| t.data());
                kernel::backward_x(x, g, gamma, &self.stats, d, dst, acc)
            }
            1 => kernel::backward_affine(x, g, &self.stats, d, false, dst, acc),
            _ => kernel::backward_affine(x, g, &self.stats, d, true, dst, acc),
        }
    }
}

/// The backward rule of a layer norm recorded on a CUDA device: the statistics stay on the
/// device (`[μ_0, rstd_0, μ_1, ...]`, from the forward kernel).
#[cfg(feature = "cuda")]
struct LayerNormBackwardGpu<T: Float> {
    x: Tensor<T>,
    gamma: Option<Tensor<T>>,
    stats: deq_cuda::GpuBuffer<T>,
    d: usize,
}

#[cfg(feature = "cuda")]
impl<T: Float> Backward<T> for LayerNormBackwardGpu<T> {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn vjp(&self, _k: usize, _g: &[T], _dst: &mut [T], _acc: bool) {
        unreachable!("layer_norm: recorded on a CUDA device, differentiated on the host")
    }

    fn vjp_gpu(
        &self,
        k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        use deq_cuda::ops::layer_norm::{self as ln, AffineParam};
        let x = buf("layer_norm", &self.x);
        match k {
            0 => {
                let gamma = self.gamma.as_ref().map(|t| buf("layer_norm", t));
                ln::layer_norm_backward_x(g, x, gamma, &self.stats, self.d, dst, acc)
            }
            1 => ln::layer_norm_backward_affine(
                AffineParam::Gamma,
                g,
                x,
                &self.stats,
                self.d,
                dst,
                acc,
            ),
            _ => ln::layer_norm_backward_affine(
                AffineParam::Beta,
                g,
                x,
                &self.stats,
                self.d,
                dst,
                acc,
            ),
        }
    }
}

/// The forward pass on a CUDA device (all operands there), recording [`LayerNormBackwardGpu`].
#[cfg(feature = "cuda")]
fn layer_norm_gpu<T: Float>(
    x: &Var<T>,
    affine: Option<(&Var<T>, &Var<T>)>,
    d: usize,
    eps: f64,
) -> Var<T> {
    let params = affine.map(|(g, b)| (buf("layer_norm", g.value()), buf("layer_norm", b.value())));
    let (y, stats) =
        deq_cuda::ops::layer_norm::layer_norm(buf("layer_norm", x.value()), d, params, eps);
    let value = Tensor::from_gpu(y, x.shape());
    let make = || LayerNormBackwardGpu {
        x: x.value().clone(),
        gamma: affine.map(|(g, _)| g.value().clone()),
        stats,
        d,
    };
    match affine {
        Some((g, b)) => record(value, &[x, g, b], make),
        None => record(value, &[x], make),
    }
}

fn layer_norm_impl<T: Float>(x: &Var<T>, affine: Option<(&Var<T>, &Var<T>)>, eps: f64) -> Var<T> {
    let shape = x.shape();
    let d = *shape
        .last()
        .unwrap_or_else(|| panic!("layer_norm: needs at least one dimension, got shape {shape:?}"));
    if let Some((g, b)) = affine {
        assert!(
            g.shape() == [d] && b.shape() == [d],
            "layer_norm: affine parameters of shapes {:?} and {:?} do not match input {shape:?} (need [{d}])",
            g.shape(),
            b.shape()
        );
    }
    #[cfg(feature = "cuda")]
    {
        let device = match affine {
            Some((g, b)) => common_device("layer_norm", &[x.value(), g.value(), b.value()]),
            None => x.value().device(),
        };
        if let crate::Device::Cuda(_) = device {
            return layer_norm_gpu(x, affine, d, eps);
        }
    }
    let xs = x.value().data();
    let rows = xs.len().checked_div(d).unwrap_or(0);
    let mut stats = vec![(T::ZERO, T::ZERO); rows];
    let mut out = crate::pool::take(xs.len());
    let params = affine.map(|(g, b)| (g.value().data(), b.value().data()));
    kernel::forward(xs, d, params, T::from_f64(eps), &mut out, &mut stats);
    let value = Tensor::from_vec(out, shape);
    let make = || LayerNormBackward {
        x: x.value().clone(),
        gamma: affine.map(|(g, _)| g.value().clone()),
        stats,
        d,
    };
    match affine {
        Some((g, b)) => record(value, &[x, g, b], make),
        None => record(value, &[x], make),
    }
}

impl<T: Float> Var<T> {
    /// Layer normalisation over the last axis without an affine map.
    pub fn layer_norm(&self, eps: f64) -> Var<T> {
        layer_norm_impl(self, None, eps)
    }

    /// Layer normalisation over the last axis followed by `x̂ ⊙ gamma + beta` (both `[d]`).
    pub fn layer_norm_affine(&self, gamma: &Var<T>, beta: &Var<T>, eps: f64) -> Var<T> {
        layer_norm_impl(self, Some((gamma, beta)), eps)
    }
}
