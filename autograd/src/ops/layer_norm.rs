//! Fused layer normalisation over the last axis, with or without an affine map.
//!
//! Forward, per row of length d: `x̂ = (x - μ)·r` with `μ = mean(x)`, `r = 1/√(var(x) + ε)`
//! (biased variance), then `y = x̂ ⊙ γ + β`. VJP, with `ĝ = g ⊙ γ`:
//! `∂x = r·(ĝ - mean(ĝ) - x̂·mean(ĝ ⊙ x̂))`, `∂γ = Σ_rows g ⊙ x̂`, `∂β = Σ_rows g`.
//! A recording keeps `x`, `γ` and the per-row statistics `(μ, r)`, on the device that computed
//! them. The loops are in [`crate::cpu::layer_norm`] and `crate::cuda::layer_norm`.

use crate::cpu::layer_norm as cpu;
use crate::device::{common_device, cuda_type, cuda_vjp, on_cuda, Device, Kept};
use crate::float::Float;
use crate::tape::{Backward, VjpTarget};
use crate::tensor::Tensor;
use crate::var::{record, Var};

/// Each row's mean and reciprocal standard deviation: `(μ, r)` pairs on the host,
/// `[μ_0, r_0, μ_1, ...]` on a device (the layout of its kernels).
type Stats<T> = Kept<Vec<(T, T)>, cuda_type!(deq_cuda::GpuBuffer<T>)>;

struct LayerNormBackward<T: Float> {
    x: Tensor<T>,
    gamma: Option<Tensor<T>>,
    stats: Stats<T>,
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
        let stats = self.stats.host("layer_norm");
        cpu::backward_x_in_place(self.x.data(), g, gamma, stats, self.d);
        true
    }

    /// `∂x`, `∂γ` and `∂β` share one pass over `g` and `x` ([`cpu::backward_fused`]).
    fn shares_work(&self) -> bool {
        true
    }

    fn vjp_many(&self, g: &[T], targets: &mut [VjpTarget<'_, T>]) {
        let (mut dx, mut dgamma, mut dbeta) = (None, None, None);
        for t in targets.iter_mut() {
            let dst = cpu::Dst {
                buf: &mut *t.dst,
                acc: t.acc,
            };
            match t.k {
                0 => dx = Some(dst),
                1 => dgamma = Some(dst),
                _ => dbeta = Some(dst),
            }
        }
        let gamma = self.gamma.as_ref().map(|t| t.data());
        let stats = self.stats.host("layer_norm");
        let x = self.x.data();
        cpu::backward_fused(x, g, gamma, stats, self.d, dx, dgamma, dbeta);
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let (x, stats, d) = (self.x.data(), self.stats.host("layer_norm"), self.d);
        match k {
            0 => {
                let gamma = self.gamma.as_ref().map(|t| t.data());
                cpu::backward_x(x, g, gamma, stats, d, dst, acc)
            }
            1 => cpu::backward_affine(x, g, stats, d, false, dst, acc),
            _ => cpu::backward_affine(x, g, stats, d, true, dst, acc),
        }
    }

    cuda_vjp!(|op, k, g, dst, acc| {
        use crate::cuda::layer_norm as gpu;
        let (x, stats, d) = (&op.x, op.stats.cuda("layer_norm"), op.d);
        match k {
            0 => gpu::backward_x(g, x, op.gamma.as_ref(), stats, d, dst, acc),
            1 => gpu::backward_affine(g, x, stats, d, false, dst, acc),
            _ => gpu::backward_affine(g, x, stats, d, true, dst, acc),
        }
    });
}

/// The forward kernel on the operands' device: the output and the per-row statistics.
fn forward<T: Float>(
    x: &Tensor<T>,
    d: usize,
    affine: Option<(&Tensor<T>, &Tensor<T>)>,
    eps: f64,
) -> (Tensor<T>, Stats<T>) {
    let device = match affine {
        Some((g, b)) => common_device("layer_norm", &[x, g, b]),
        None => x.device(),
    };
    match device {
        Device::Cpu => {
            let xs = x.data();
            let rows = xs.len().checked_div(d).unwrap_or(0);
            let mut stats = vec![(T::ZERO, T::ZERO); rows];
            let mut out = crate::pool::take(xs.len());
            let params = affine.map(|(g, b)| (g.data(), b.data()));
            cpu::forward(xs, d, params, T::from_f64(eps), &mut out, &mut stats);
            (Tensor::from_vec(out, x.shape()), Kept::Host(stats))
        }
        Device::Cuda(_) => on_cuda!({
            let (y, stats) = crate::cuda::layer_norm::forward(x, d, affine, eps);
            (y, Kept::Cuda(stats))
        }),
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
    let params = affine.map(|(g, b)| (g.value(), b.value()));
    let (value, stats) = forward(x.value(), d, params, eps);
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
