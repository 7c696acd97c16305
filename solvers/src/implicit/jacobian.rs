//! Jacobian regularisation and the spectral radius of `J_f(z*)`.
//!
//! The penalty is Hutchinson's estimate of `‖J_f(z*)‖_F² / N`: for probes `ε ~ N(0, I)`,
//! `E‖J ε‖² = ‖J‖_F²` (the paper's follow-up, Bai et al. 2021, uses the same estimator with
//! `εᵀJ`; both have this expectation). We form `J ε` by a central difference,
//!
//! `J ε ≈ r(θ) = (f(z* + hε; θ) − f(z* − hε; θ)) / 2h`,
//!
//! recorded on the caller's tape, so the penalty's gradient with respect to `x` and `θ` comes
//! from ordinary first-order backpropagation through two applications of `f`: no second-order
//! autodiff is needed. The surrogate differs from the exact `‖J ε‖²` by `O(h²)` (third
//! derivatives of `f`); with `h = ε_mach^{1/3}·(1 + ‖z*‖_∞)` that is about 1e-11 relative in
//! f64 and 1e-5 in f32, far below the estimator's own sampling noise. As in locuslab/deq, `z*`
//! is held constant: the gradient is the partial one at the equilibrium.

use super::layer::ImplicitCell;
use deq_autograd::{Float, Rng, Tape, Tensor, Var};

/// Hutchinson estimate of `‖J_f(z*)‖_F² / numel(z*)` with `n_vecs` Gaussian probes drawn from
/// `rng`, as a variable recorded through `x` and `params` (add `weight × penalty` to the loss).
pub fn jacobian_penalty<T: Float>(
    f: &impl ImplicitCell<T>,
    x: &Var<T>,
    params: &[Var<T>],
    z_star: &Tensor<T>,
    n_vecs: usize,
    rng: &mut Rng,
) -> Var<T> {
    assert!(n_vecs >= 1, "jacobian_penalty: n_vecs must be ≥ 1");
    // Probes are drawn on the host (the same stream of numbers on every device) and the
    // shifted points moved to z*'s device.
    let z_host = z_star.to_vec();
    let zmax = z_host.iter().fold(0.0f64, |m, v| m.max(v.to_f64().abs()));
    let h = T::EPSILON.to_f64().cbrt() * (1.0 + zmax);
    let n = z_star.numel().max(1);
    let mut total: Option<Var<T>> = None;
    for _ in 0..n_vecs {
        let eps = Tensor::<T>::randn(z_star.shape(), 1.0, rng);
        let shifted = |sign: f64| {
            let z = Tensor::from_fn(z_star.shape(), |i| {
                z_host[i] + T::from_f64(sign * h) * eps.data()[i]
            })
            .to_device(z_star.device())
            .expect("z*'s device is open");
            f.apply(&Var::constant(z), x, params)
        };
        let r = shifted(1.0).sub(&shifted(-1.0)).mul_scalar(0.5 / h);
        let sq = r.mul(&r).sum_all();
        total = Some(match total {
            None => sq,
            Some(t) => t.add(&sq),
        });
    }
    total
        .expect("at least one probe")
        .mul_scalar(1.0 / (n_vecs as f64 * n as f64))
}

/// The spectral radius of `J_f(z*)`, by `iters` steps of power iteration on VJPs
/// (`vᵀ ← vᵀJ / ‖vᵀJ‖`, whose growth factor tends to the largest eigenvalue modulus when that
/// eigenvalue is real and simple). For evaluation: it records one `f(z*)` on a private tape.
/// A value near or above 1 means the fixed point is unstable for naive iteration.
pub fn spectral_radius<T: Float>(
    f: &impl ImplicitCell<T>,
    x: &Var<T>,
    params: &[Var<T>],
    z_star: &Tensor<T>,
    iters: usize,
    rng: &mut Rng,
) -> f64 {
    let tape = Tape::new();
    let z = tape.leaf(z_star.clone());
    let (xc, pc): (Var<T>, Vec<Var<T>>) = (x.detach(), params.iter().map(Var::detach).collect());
    let fz = f.apply(&z, &xc, &pc);
    let mut v = Tensor::<T>::randn(z_star.shape(), 1.0, rng);
    let mut estimate = 0.0;
    for _ in 0..iters.max(1) {
        let norm = v.norm();
        if norm == 0.0 || !norm.is_finite() {
            return estimate;
        }
        let scale = T::from_f64(1.0 / norm);
        let probe = v
            .map(|a| a * scale)
            .to_device(z_star.device())
            .expect("z*'s device is open");
        let w = tape.vjp(&[&fz], &[&probe], &[&z]).remove(0);
        estimate = w.norm();
        v = w.to_device(deq_autograd::Device::Cpu).expect("cpu");
    }
    estimate
}
