//! # deq-solvers: fixed-point solvers for deep equilibrium models
//!
//! Every DEQ forward pass solves `z* = f(z*)` for a batch of states, and every implicit
//! backward pass solves `y = y·J_f(z*) + c`. [`solve()`] does both, per sample of a batch
//! `[B, ...]` viewed as `B × N`, generic over `f32`/`f64`, with three methods
//! ([`SolverKind`]):
//!
//! - **Naive**: `z ← τ f(z) + (1 − τ) z`.
//! - **Anderson** `{m, λ, β}`: `z ← Σ α_i X_i + β Σ α_i G_i` with weights from the bordered
//!   system `[[0, 1ᵀ], [1, G Gᵀ + λI]] [ν; α] = [1; 0]` over the last `n ≤ m` residuals,
//!   solved with faer; a singular system falls back to a plain step.
//! - **Broyden** `{memory}`: "good" Broyden on `g(z) = f(z) − z` in inverse form,
//!   `B = −I + Σ u_i v_iᵀ`, step `z ← z − B g`, update `vᵀ = Δzᵀ B`,
//!   `u = (Δz − BΔg)/(vᵀΔg)`; at most `memory` pairs per sample (oldest dropped first).
//!
//! Unlike the reference implementations, convergence is decided per sample and converged
//! samples are frozen; the lowest-residual iterate is returned per sample; a sample that
//! diverges (residual past `protect ×` its initial one, or non-finite `f(z)`) is frozen at its
//! best finite iterate and flagged; singular systems never panic; configurations reject unknown
//! keys and invalid values ([`SolverConfig`]). [`SolveStats`] reports iterations, f-evals,
//! per-sample residual traces, lowest residuals and flags.
//!
//! ```
//! use deq_autograd::Tensor;
//! use deq_solvers::{solve, SolverConfig, SolverKind, StopMode};
//!
//! // z = tanh(0.5 z + x) for a batch of 4 samples of 8 values.
//! let x = Tensor::<f64>::from_fn(&[4, 8], |i| (i as f64 * 0.37).sin());
//! let f = |z: &Tensor<f64>| {
//!     let zx = z.data().iter().zip(x.data());
//!     Tensor::from_vec(zx.map(|(z, x)| (0.5 * z + x).tanh()).collect(), z.shape())
//! };
//! let kind = SolverKind::Anderson { m: 5, lam: 1e-8, beta: 1.0 };
//! let cfg = SolverConfig::new(kind, 50, 1e-8, StopMode::Rel).unwrap();
//! let (z, stats) = solve(&cfg, f, &Tensor::zeros(&[4, 8]));
//! assert!(stats.all_converged() && stats.max_rel() < 1e-8);
//! assert_eq!(z.shape(), &[4, 8]);
//! ```

mod anderson;
mod bordered;
mod broyden;
mod monitor;
mod naive;
mod step;
mod vecops;

pub mod config;
pub mod implicit;
pub mod solve;
pub mod stats;

pub use config::{ConfigError, SolverConfig, SolverKind, StopMode};
pub use implicit::{
    check_cell, deq, BackwardMode, CellCheckOptions, CellCheckReport, DeqConfig, DeqOutput,
    DeqStats, ImplicitCell,
};
pub use solve::solve;
pub use stats::SolveStats;
