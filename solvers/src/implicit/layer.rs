//! `deq`: the equilibrium `z* = f(z*, x; θ)` as a differentiable op.
//!
//! Forward: solve with recording off (no node recorded, no intermediate kept). Backward
//! ([`BackwardMode::Implicit`]): by the implicit function theorem (paper Theorem 1), with
//! `g(z) = f(z) − z`,
//!
//! `∂L/∂(x, θ) = −∂L/∂z* · J_g(z*)⁻¹ · ∂f/∂(x, θ) = y · ∂f(z*)/∂(x, θ)`
//!
//! where `y` solves the adjoint fixed point `y = y·J_f(z*) + ∂L/∂z*`. The layer records ONE
//! application `f(z*)` on a private tape with `z*`, `x` and `θ` as leaves; each backward
//! solver iteration is one replayed VJP of that graph with respect to `z*` only (no
//! weight-gradient products), and one final full VJP maps `y` into `x` and `θ`. The result is
//! attached to the caller's tape as a custom op, so memory never depends on the iteration count.

use super::config::{BackwardMode, DeqConfig};
use crate::active_rows::{gather_rows, solve_rows};
use crate::solve::{solve, solve_from};
use crate::stats::SolveStats;
use deq_autograd::{custom_op, no_grad, Float, Tape, Tensor, Var};
use std::cell::RefCell;
use std::rc::Rc;

/// A cell `f(z, x; θ)`: anything callable as `f(&z, &x, &params) -> z'`, written against the
/// autograd ops so that it can be evaluated both without recording (inside the solver) and
/// recorded (for gradients). `z'` must have the shape of `z`; the first axis is the batch,
/// and samples must not interact (each sample's residual and convergence are tracked apart).
pub trait ImplicitCell<T: Float> {
    /// One application of the cell.
    fn apply(&self, z: &Var<T>, x: &Var<T>, params: &[Var<T>]) -> Var<T>;

    /// Whether the cell may be applied to a sub-batch: rows `R` of `z` with rows `R` of `x`
    /// (`x`'s first axis is the batch) give rows `R` of the full application, and neither a
    /// parameter nor the cell itself holds per-sample values (a memory, a `[B, 1, d]`
    /// dropout mask). Then the forward solve evaluates only the samples still active
    /// ([`crate::solve_rows`]); an `x` without the batch as its first axis (broadcast,
    /// `[1, d]`) keeps the whole-batch solve. `false` unless the cell says so: wrap it in
    /// [`RowWise`].
    fn rows_independent(&self) -> bool {
        false
    }
}

/// A cell whose batch rows are independent (see [`ImplicitCell::rows_independent`]): the
/// forward solve of [`deq`] applies it to the active samples only, so samples that have
/// converged cost nothing. Wrapping a cell that mixes samples, or that holds per-sample
/// values (in its parameters or in itself), gives wrong results.
pub struct RowWise<C>(pub C);

impl<T: Float, C: ImplicitCell<T>> ImplicitCell<T> for RowWise<C> {
    fn apply(&self, z: &Var<T>, x: &Var<T>, params: &[Var<T>]) -> Var<T> {
        self.0.apply(z, x, params)
    }

    fn rows_independent(&self) -> bool {
        true
    }
}

impl<T: Float, F> ImplicitCell<T> for F
where
    F: Fn(&Var<T>, &Var<T>, &[Var<T>]) -> Var<T>,
{
    fn apply(&self, z: &Var<T>, x: &Var<T>, params: &[Var<T>]) -> Var<T> {
        self(z, x, params)
    }
}

/// Statistics of one [`deq`] call: the forward solve at once, the backward solve after the
/// caller's backward pass has run.
#[derive(Clone, Debug)]
pub struct DeqStats {
    /// The forward solve (`None` for [`BackwardMode::Unrolled`], which does not solve).
    pub forward: Option<SolveStats>,
    backward: Rc<RefCell<Option<SolveStats>>>,
}

impl DeqStats {
    /// The backward (adjoint) solve's statistics, once a VJP through the layer has run
    /// (the latest one if several have); `None` before, or without an implicit backward.
    pub fn backward(&self) -> Option<SolveStats> {
        self.backward.borrow().clone()
    }
}

/// The output of [`deq`].
#[derive(Clone, Debug)]
pub struct DeqOutput<T: Float> {
    /// The equilibrium, recorded on the caller's tape when `x` or a parameter is.
    pub z: Var<T>,
    /// Solver statistics.
    pub stats: DeqStats,
}

/// Finds `z* = f(z*, x; θ)` from `z0` and returns it as a differentiable variable.
///
/// With [`BackwardMode::Implicit`] the gradient is exact up to the backward solver's
/// tolerance, whatever the forward iteration count. The value returned is `f(z*)`, the one
/// recorded application (equal to `z*` up to the forward residual). When recording is off,
/// or neither `x` nor any parameter is recorded, only the forward solve runs.
pub fn deq<T: Float>(
    f: &impl ImplicitCell<T>,
    x: &Var<T>,
    params: &[Var<T>],
    z0: &Tensor<T>,
    cfg: &DeqConfig,
) -> DeqOutput<T> {
    let backward = Rc::new(RefCell::new(None));
    let recorded = x.requires_grad() || params.iter().any(Var::requires_grad);
    match cfg.mode {
        BackwardMode::Unrolled { k } => {
            let mut z = Var::constant(z0.clone());
            for _ in 0..k {
                z = f.apply(&z, x, params);
            }
            DeqOutput {
                z,
                stats: DeqStats {
                    forward: None,
                    backward,
                },
            }
        }
        BackwardMode::Phantom { k, tau } => {
            let (z_star, fwd) = forward_solve(f, x, params, z0, cfg);
            let mut z = Var::constant(z_star);
            for _ in 0..k {
                let fz = f.apply(&z, x, params);
                z = if tau == 1.0 {
                    fz
                } else {
                    fz.mul_scalar(tau).add(&z.mul_scalar(1.0 - tau))
                };
            }
            DeqOutput {
                z,
                stats: DeqStats {
                    forward: Some(fwd),
                    backward,
                },
            }
        }
        BackwardMode::Implicit => {
            let (z_star, fwd) = forward_solve(f, x, params, z0, cfg);
            let z = if recorded {
                attach_implicit_backward(f, x, params, z_star, cfg, backward.clone())
            } else {
                no_grad(|| f.apply(&Var::constant(z_star), x, params))
            };
            DeqOutput {
                z,
                stats: DeqStats {
                    forward: Some(fwd),
                    backward,
                },
            }
        }
    }
}

/// The forward solve, with recording off.
fn forward_solve<T: Float>(
    f: &impl ImplicitCell<T>,
    x: &Var<T>,
    params: &[Var<T>],
    z0: &Tensor<T>,
    cfg: &DeqConfig,
) -> (Tensor<T>, SolveStats) {
    let batch = if z0.ndim() == 0 { 1 } else { z0.dim(0) };
    let compact =
        f.rows_independent() && x.ndim() > 0 && x.dim(0) == batch && batch > 1 && x.numel() > 0;
    no_grad(|| {
        if !compact {
            return solve(
                &cfg.forward,
                |z: &Tensor<T>| f.apply(&Var::constant(z.clone()), x, params).into_value(),
                z0,
            );
        }
        // The injection's rows for the current set of active samples, gathered once per
        // change of that set (it only shrinks).
        let mut x_part: Option<(Vec<usize>, Var<T>)> = None;
        solve_rows(
            &cfg.forward,
            |z: &Tensor<T>, rows: &[usize]| {
                let z = Var::constant(z.clone());
                if rows.len() == batch {
                    return f.apply(&z, x, params).into_value();
                }
                if x_part.as_ref().is_none_or(|(r, _)| r != rows) {
                    let part = Var::constant(gather_rows(x.value(), rows));
                    x_part = Some((rows.to_vec(), part));
                }
                let (_, xp) = x_part.as_ref().expect("gathered just above");
                f.apply(&z, xp, params).into_value()
            },
            z0,
        )
    })
}

/// Records `f(z*)` on a private tape and puts the implicit-backward custom op on the caller's.
fn attach_implicit_backward<T: Float>(
    f: &impl ImplicitCell<T>,
    x: &Var<T>,
    params: &[Var<T>],
    z_star: Tensor<T>,
    cfg: &DeqConfig,
    backward_stats: Rc<RefCell<Option<SolveStats>>>,
) -> Var<T> {
    let inner = Tape::new();
    let z_leaf = inner.leaf(z_star);
    let x_leaf = inner.leaf(x.value().clone());
    let p_leaves: Vec<Var<T>> = params
        .iter()
        .map(|p| inner.leaf(p.value().clone()))
        .collect();
    let fz = f.apply(&z_leaf, &x_leaf, &p_leaves);
    assert_eq!(
        fz.shape(),
        z_leaf.shape(),
        "deq: the cell maps z of shape {:?} to shape {:?}",
        z_leaf.shape(),
        fz.shape()
    );
    let value = fz.value().clone();
    let b_cfg = cfg.backward.clone();
    let mut inputs: Vec<&Var<T>> = Vec::with_capacity(params.len() + 1);
    inputs.push(x);
    inputs.extend(params.iter());
    let vjp = move |g: &Tensor<T>, needs: &[bool]| -> Vec<Option<Tensor<T>>> {
        // Adjoint solve y = y·J_f(z*) + g, from y0 = 0; each iteration one pruned z-only VJP,
        // g added in the VJP's own buffer (one pass, or one kernel on a device).
        let (y, stats) = solve_from(
            &b_cfg,
            |y: &Tensor<T>| inner.vjp_plus(&fz, y, &z_leaf, g),
            Tensor::zeros_on(g.shape(), g.device()),
        );
        *backward_stats.borrow_mut() = Some(stats);
        // One full VJP maps y into x and the parameters that need it.
        let mut wrt: Vec<&Var<T>> = Vec::new();
        let mut slots = Vec::new();
        if needs[0] {
            wrt.push(&x_leaf);
            slots.push(0);
        }
        for (i, p) in p_leaves.iter().enumerate() {
            if needs[i + 1] {
                wrt.push(p);
                slots.push(i + 1);
            }
        }
        let mut out: Vec<Option<Tensor<T>>> = vec![None; needs.len()];
        if !wrt.is_empty() {
            let grads = inner.vjp(&[&fz], &[&y], &wrt);
            for (slot, grad) in slots.into_iter().zip(grads) {
                out[slot] = Some(grad);
            }
        }
        out
    };
    custom_op(value, &inputs, Box::new(vjp))
}
