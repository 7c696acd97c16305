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
//! autodiff is needed. The gradient is the exact gradient of this surrogate; as in
//! locuslab/deq, `z*` is held constant (the partial gradient at the equilibrium).
//!
//! # Error of the surrogate, and the choice of `h`
//!
//! The surrogate differs from `J ε` by truncation, `(h²/6)·∂³f[ε, ε, ε]` (third directional
//! derivative), and by rounding: each `f(z* ± hε)` carries an absolute error of about
//! `ε_mach·|f|`, and `z* ± hε` is itself rounded (a shift of `ε_mach·|z*|`, seen through `J`),
//! which the difference divides by `2h`. So the error behaves as `e(h) = a·h² + b·ε_mach/h`,
//! smallest at `h* = (b·ε_mach / 2a)^{1/3}`, where it is of order `ε_mach^{2/3}`: about
//! `2.4e-5` times a cell constant in f32 and `3.7e-11` in f64. The gradient of the penalty is
//! the same central difference applied to `∂f/∂θ`, with the same trade-off. We take
//! `h = H_SCALE · ε_mach^{1/3} · (1 + ‖z*‖_∞)` (the factor keeps the rounding of `z* ± hε`
//! relative), with `H_SCALE = 0.3` chosen from measurements in f32 on the DEQ-Transformer and
//! TrellisNet cells of `deq-models` (16 random initialisations, gradients against the f64
//! surrogate): with `h = c·ε^{1/3}(1 + ‖z*‖_∞)`, the gradient's error was about
//! `1.4e-4·c²` (truncation) plus `6e-6/c` (rounding), smallest near `c = 0.3`; at `c = 1` it
//! was 5 times larger, and one ReLU kink inside `z* ± hε` made one gradient entirely wrong.
//!
//! Stated error (relative to the exact `‖J ε‖²` and its gradient for a smooth cell):
//! - f32 (`h ≈ 1.5e-3·(1 + ‖z*‖_∞)`): the penalty within [`F32_PENALTY_ERROR`], its gradient
//!   within [`F32_GRADIENT_ERROR`] of the largest entry of each input's gradient (measured
//!   against the f64 surrogate: 1.6e-5 and 1.4e-4);
//! - f64 (`h ≈ 1.8e-6·(1 + ‖z*‖_∞)`): the penalty within [`F64_PENALTY_ERROR`] (measured
//!   2e-11 against `‖J ε‖²` from exact VJPs; the gradient's error is of the same order, far
//!   below the estimator's sampling noise).
//!
//! `deq-models/tests/jacobian_reg.rs` checks these bounds inside both cells.
//!
//! Cells with kinks (ReLU) break the smoothness assumption for a unit whose pre-activation
//! lies within about `h` of its kink: there the surrogate measures the secant across the
//! kink. A smaller `h` makes that rarer, which also favours `c < 1`.

use super::layer::ImplicitCell;
use deq_autograd::{Float, Rng, Tape, Tensor, Var};

/// The central-difference step is `H_SCALE · ε_mach^{1/3} · (1 + ‖z*‖_∞)` (module docs).
pub const H_SCALE: f64 = 0.3;

/// Relative error bound of the f32 penalty (module docs).
pub const F32_PENALTY_ERROR: f64 = 1e-4;

/// Error bound of the f32 penalty's gradient, relative to the largest entry of each input's
/// gradient (module docs).
pub const F32_GRADIENT_ERROR: f64 = 5e-4;

/// Relative error bound of the f64 penalty (module docs).
pub const F64_PENALTY_ERROR: f64 = 1e-8;

/// Hutchinson estimate of `‖J_f(z*)‖_F² / numel(z*)` with `n_vecs` Gaussian probes drawn from
/// `rng`, as a variable recorded through `x` and `params` (add `weight × penalty` to the loss).
/// Each `J ε` is the central difference of the module docs, with their error bounds.
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
    let h = H_SCALE * T::EPSILON.to_f64().cbrt() * (1.0 + zmax);
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
