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
//! # Stop rules
//!
//! Per sample, on its `N` values and accumulated in f64, the residuals of an iterate are
//! `abs = ‖f(z) − z‖₂` and `rel = abs / (‖f(z)‖₂ + 1e-9)`. A sample has converged when its
//! residual in [`StopMode`] is strictly below `tol`; it is then frozen (no longer updated, and
//! passed to `f` unchanged). The protective stop freezes a sample whose absolute residual
//! exceeds `protect ×` its initial one, or whose `f(z)` is not finite, and flags it diverged.
//! The batch stops when no sample is active or after `max_iter` iterations (with
//! `early_stop = false`, exactly `max_iter`). Each sample gets back its lowest-residual iterate.
//!
//! Anderson's ridge `λ` is absolute: it must be small against `‖G‖²`, the squared residuals
//! near the tolerance, or the weights tend to `1/n` and the step averages the history. The
//! adjoint solve's residuals scale with `∂L/∂z*` (a loss averaged over many tokens makes them
//! small), so its `λ` may need to be far smaller than the forward one's.
//!
//! # The implicit layer
//!
//! [`deq()`] returns the equilibrium `z* = f(z*, x; θ)` of a cell ([`ImplicitCell`]: any
//! closure or type written against the autograd ops) as a variable on the caller's tape. By the
//! implicit function theorem, with `g(z) = f(z) − z`,
//!
//! `∂L/∂(x, θ) = −∂L/∂z* · J_g(z*)⁻¹ · ∂f(z*)/∂(x, θ) = y · ∂f(z*)/∂(x, θ)`, where
//! `y = y·J_f(z*) + ∂L/∂z*`.
//!
//! The backward pass solves that adjoint fixed point with [`DeqConfig::backward`], one replayed
//! VJP of a single recorded `f(z*)` per iteration, so memory does not depend on the iteration
//! count ([`BackwardMode`] also offers phantom gradients and unrolled backpropagation). The
//! forward and backward solves' [`SolveStats`] are in [`DeqOutput::stats`].
//! [`check_cell`] checks a user cell's op-level VJPs and implicit gradient against finite
//! differences and prints a per-input report.
//!
//! # Examples
//!
//! The solver alone:
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
//!
//! A DEQ layer: define `f`, find `z*`, backpropagate with [`Tape::vjp`], read the statistics
//! (the README's "Library" example):
//!
//! ```
//! use deq_autograd::{Tape, Tensor, Var};
//! use deq_solvers::{deq, BackwardMode, DeqConfig, SolverConfig};
//!
//! // f(z, x; W, U) = tanh(z·Wᵀ + x·Uᵀ): any closure (or ImplicitCell type) of autograd ops.
//! let f = |z: &Var<f64>, x: &Var<f64>, p: &[Var<f64>]| {
//!     z.linear(&p[0], None).add(&x.linear(&p[1], None)).tanh()
//! };
//! let tape = Tape::new();
//! let w = tape.leaf(Tensor::from_fn(&[4, 4], |i| 0.1 * ((i % 5) as f64 - 2.0)));
//! let u = tape.leaf(Tensor::from_fn(&[4, 3], |i| (i as f64).sin()));
//! let x = Var::constant(Tensor::from_fn(&[2, 3], |i| i as f64 / 6.0)); // a batch of 2
//! let (fwd, bwd) = (SolverConfig::broyden(), SolverConfig::anderson());
//! let cfg = DeqConfig::new(fwd, bwd, BackwardMode::Implicit).unwrap();
//! let out = deq(&f, &x, &[w.clone(), u.clone()], &Tensor::zeros(&[2, 4]), &cfg);
//! let loss = out.z.mul(&out.z).sum_all();
//! // Implicit backward: one adjoint solve, then one VJP into W and U.
//! let grads = tape.vjp(&[&loss], &[&Tensor::scalar(1.0)], &[&w, &u]);
//! let fs = out.stats.forward.as_ref().unwrap();
//! let bs = out.stats.backward().unwrap(); // filled in by the VJP
//! println!("forward: {} iterations, rel residual {:.1e}", fs.iterations, fs.max_rel());
//! println!("backward: {} iterations, rel residual {:.1e}", bs.iterations, bs.max_rel());
//! assert!(fs.all_converged() && bs.all_converged());
//! assert_eq!(grads[0].shape(), &[4, 4]);
//! ```
//!
//! [`Tape::vjp`]: deq_autograd::Tape::vjp

#![warn(missing_docs)]

mod active_rows;
mod anderson;
mod bordered;
mod broyden;
mod broyden_step;
#[cfg(feature = "cuda")]
mod gpu;
mod monitor;
mod naive;
mod step;
mod vecops;

pub mod config;
pub mod implicit;
pub mod solve;
pub mod stats;

pub use active_rows::{gather_rows, solve_rows};
pub use broyden::RESTART_GROWTH;
pub use config::{ConfigError, SolverConfig, SolverKind, StopMode};
pub use implicit::{
    check_cell, deq, BackwardMode, CellCheckOptions, CellCheckReport, DeqConfig, DeqOutput,
    DeqStats, ImplicitCell, RowWise,
};
pub use solve::{solve, solve_from};
pub use stats::SolveStats;
