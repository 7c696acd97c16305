//! Gradient checks for user-written cells: can you trust the gradient of your implicit layer?
//!
//! [`check_cell`] runs two checks in f64 and returns a [`CellCheckReport`] that prints as a
//! table and answers [`passed`](CellCheckReport::passed):
//!
//! 1. **Op level.** The VJP of ONE application `f(z, x; θ)` with respect to `z`, `x` and every
//!    parameter, against central finite differences ([`deq_autograd::gradcheck()`]), at the
//!    equilibrium `z*` (the point whose Jacobian the implicit backward uses). A wrong VJP in a
//!    custom op, or an op whose gradient the cell drops, shows up here, input by input.
//! 2. **Implicit.** The gradient of the solved map `(x, θ) ↦ z*(x, θ)` through [`deq`] with
//!    [`BackwardMode::Implicit`], against finite differences of the same map, every perturbed
//!    point solved again from `z0`. Both the forward and the adjoint solve use
//!    [`CellCheckOptions::solver`] (Broyden to an absolute residual of 1e-12 by default). This
//!    checks what training uses: the op-level VJPs, the adjoint solve
//!    `y = y·J_f(z*) + ∂L/∂z*` and the final map of `y` into `x` and `θ`.
//!
//! The report also gives the forward solve's convergence at the unperturbed point (iterations,
//! residual) and the adjoint solve's, and warns when either did not converge: the implicit
//! function theorem differentiates a fixed point, so a forward solve that did not find one
//! makes the implicit rows meaningless and the check fails.
//!
//! # Pass rule
//! For each input, with `a` the analytic and `n` the numeric gradient of `⟨u, output⟩` for a
//! fixed random cotangent `u`: `abs = max_j |a_j − n_j|` and
//! `rel = abs / max(‖a‖∞, ‖n‖∞)`. An input passes when both gradients are finite and
//! `rel ≤ tolerance` **or** `abs ≤ floor`. The absolute floor is there because a gradient that
//! is tiny or zero (a parameter the cell barely uses) has a relative error made of
//! finite-difference noise only: central differences with step `h` carry round-off of about
//! `ε·|⟨u, f⟩|/h` (1e-10 to 1e-9 with `h = 1e-6`, hence [`CellCheckOptions::op_abs_floor`]
//! = 1e-9), and differences of solved maps carry the solver's residual over `h` (about
//! 1e-12 / 1e-5 = 1e-7, hence [`CellCheckOptions::implicit_abs_floor`] = 1e-7). A wrong
//! gradient of ordinary size is far above either floor.
//!
//! # Cost
//! The op-level check applies the cell `2·(numel z + numel x + Σ numel θ)` times; the implicit
//! check runs `2·(numel x + Σ numel θ)` full tight solves. Check a small instance of your cell
//! (a batch of 2–4, widths of 4–32): the gradient code is the same at any size.
//!
//! ```
//! use deq_autograd::{Rng, Tensor, Var};
//! use deq_solvers::implicit::{check_cell, CellCheckOptions};
//!
//! // z = tanh(z·Wᵀ + x·Uᵀ), a contraction for small W.
//! let cell = |z: &Var<f64>, x: &Var<f64>, p: &[Var<f64>]| {
//!     z.linear(&p[0], None).add(&x.linear(&p[1], None)).tanh()
//! };
//! let mut rng = Rng::new(0);
//! let w = Tensor::randn(&[4, 4], 0.2, &mut rng);
//! let u = Tensor::randn(&[4, 3], 0.5, &mut rng);
//! let x = Tensor::randn(&[2, 3], 1.0, &mut rng);
//! let opts = CellCheckOptions::default();
//! let report = check_cell(&cell, &x, &[w, u], &Tensor::zeros(&[2, 4]), &opts);
//! println!("{report}");
//! assert!(report.passed(), "{report}");
//! ```

use super::config::{BackwardMode, DeqConfig};
use super::layer::{deq, DeqStats, ImplicitCell};
use crate::config::{SolverConfig, SolverKind, StopMode};
use crate::stats::SolveStats;
use deq_autograd::{gradcheck, no_grad, GradcheckOptions, InputReport, Tensor, Var};
use std::cell::RefCell;
use std::fmt;

/// Settings for [`check_cell`]. The defaults suit cells whose values and gradients are of
/// order one.
#[derive(Clone, Debug)]
pub struct CellCheckOptions {
    /// Finite-difference step of the op-level check (default 1e-6: truncation `O(h²)` and
    /// round-off `O(ε/h)` balance in f64).
    pub op_step: f64,
    /// Finite-difference step of the implicit check (default 1e-5: larger, because every
    /// evaluation carries the solver's residual, whose effect is divided by `h`).
    pub implicit_step: f64,
    /// Relative tolerance of both checks (default 1e-5).
    pub tolerance: f64,
    /// Absolute floor of the op-level check (default 1e-9): an input whose largest absolute
    /// error is at most this passes whatever its relative error.
    pub op_abs_floor: f64,
    /// Absolute floor of the implicit check (default 1e-7, about the solver tolerance divided
    /// by [`implicit_step`](CellCheckOptions::implicit_step)).
    pub implicit_abs_floor: f64,
    /// Solver for the forward and the adjoint solves of the implicit check (default Broyden
    /// with 50 pairs, 500 iterations, absolute tolerance 1e-12). The finite differences are
    /// only as good as these solves: keep the tolerance tight.
    pub solver: SolverConfig,
    /// Run the implicit check (default true); `false` runs the op-level check only (still at
    /// the equilibrium found by one forward solve).
    pub implicit: bool,
    /// Seed of the random cotangents.
    pub seed: u64,
}

impl Default for CellCheckOptions {
    fn default() -> Self {
        CellCheckOptions {
            op_step: 1e-6,
            implicit_step: 1e-5,
            tolerance: 1e-5,
            op_abs_floor: 1e-9,
            implicit_abs_floor: 1e-7,
            solver: SolverConfig::new(
                SolverKind::Broyden { memory: 50 },
                500,
                1e-12,
                StopMode::Abs,
            )
            .expect("valid default solver"),
            implicit: true,
            seed: 0x5eed,
        }
    }
}

/// Which of the two checks a [`CheckRow`] belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// One application `f(z, x; θ)`.
    Op,
    /// The solved map `z*(x, θ)` through [`deq`].
    Implicit,
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckKind::Op => "op",
            CheckKind::Implicit => "implicit",
        })
    }
}

/// One input of one check.
#[derive(Clone, Debug)]
pub struct CheckRow {
    /// The check.
    pub kind: CheckKind,
    /// `"z"`, `"x"`, `"param 0"`, `"param 1"`, … (parameters in the order given).
    pub input: String,
    /// The input's shape.
    pub shape: Vec<usize>,
    /// `max_j |analytic_j − numeric_j|`.
    pub max_abs_error: f64,
    /// `max_abs_error / max(‖analytic‖∞, ‖numeric‖∞)` (0 when both are zero).
    pub max_rel_error: f64,
    /// `‖numeric‖∞`, the gradient's scale.
    pub scale: f64,
    /// Flat index of the element with the largest absolute error.
    pub worst_element: usize,
    /// Both gradients are finite.
    pub finite: bool,
    /// Relative tolerance applied.
    pub tolerance: f64,
    /// Absolute floor applied.
    pub abs_floor: f64,
    /// `finite && (max_rel_error ≤ tolerance || max_abs_error ≤ abs_floor)`.
    pub passed: bool,
}

impl CheckRow {
    fn new(kind: CheckKind, input: String, r: &InputReport, tolerance: f64, floor: f64) -> Self {
        // The gradcheck ran with an infinite tolerance, so its `passed` is exactly "both
        // gradients finite"; the pass rule with the floor is applied here.
        let finite = r.passed;
        CheckRow {
            kind,
            input,
            shape: r.shape.clone(),
            max_abs_error: r.max_abs_error,
            max_rel_error: r.max_rel_error,
            scale: r.scale,
            worst_element: r.worst_element,
            finite,
            tolerance,
            abs_floor: floor,
            passed: finite && (r.max_rel_error <= tolerance || r.max_abs_error <= floor),
        }
    }

    fn verdict(&self) -> String {
        if !self.finite {
            "FAIL (non-finite gradient)".into()
        } else if !self.passed {
            format!("FAIL (worst element {})", self.worst_element)
        } else if self.max_rel_error > self.tolerance {
            "pass (abs floor)".into()
        } else {
            "pass".into()
        }
    }
}

/// The result of [`check_cell`]; `Display` prints it as a table with the solver summary and
/// any warnings.
#[derive(Clone, Debug)]
pub struct CellCheckReport {
    /// Op-level rows: `z`, `x`, then each parameter.
    pub op: Vec<CheckRow>,
    /// Implicit rows: `x`, then each parameter (empty when the implicit check was skipped).
    pub implicit: Vec<CheckRow>,
    /// The forward solve at the unperturbed `(x, θ)`.
    pub forward: SolveStats,
    /// The adjoint solve of the implicit check's analytic gradient (`None` when skipped).
    pub backward: Option<SolveStats>,
    /// The solver used for both.
    pub solver: SolverConfig,
    /// Problems worth reading even when every row passed.
    pub warnings: Vec<String>,
}

impl CellCheckReport {
    /// Every row passed and the forward solve converged for every sample.
    pub fn passed(&self) -> bool {
        self.op_passed() && self.implicit_passed() && self.forward.all_converged()
    }

    /// Every op-level row passed.
    pub fn op_passed(&self) -> bool {
        self.op.iter().all(|r| r.passed)
    }

    /// Every implicit row passed (true when the implicit check was skipped).
    pub fn implicit_passed(&self) -> bool {
        self.implicit.iter().all(|r| r.passed)
    }

    /// All rows, op-level first.
    pub fn rows(&self) -> impl Iterator<Item = &CheckRow> {
        self.op.iter().chain(&self.implicit)
    }

    /// The largest relative error over all rows.
    pub fn max_rel_error(&self) -> f64 {
        self.rows().map(|r| r.max_rel_error).fold(0.0, f64::max)
    }

    /// The largest absolute error over all rows.
    pub fn max_abs_error(&self) -> f64 {
        self.rows().map(|r| r.max_abs_error).fold(0.0, f64::max)
    }
}

fn solve_line(name: &str, s: &SolveStats, cfg: &SolverConfig) -> String {
    let state = if s.any_diverged() {
        "DIVERGED"
    } else if s.all_converged() {
        "converged"
    } else {
        "NOT converged"
    };
    format!(
        "{name}: {} iterations ({} f-evals), max residual abs {:.2e} / rel {:.2e} (tol {:.0e} {}): {state}",
        s.iterations,
        s.f_evals,
        s.max_abs(),
        s.max_rel(),
        cfg.tol,
        match cfg.stop_mode {
            StopMode::Abs => "abs",
            StopMode::Rel => "rel",
        },
    )
}

impl fmt::Display for CellCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cell gradient check (f64, central differences; pass: rel err ≤ tol or abs err ≤ floor)"
        )?;
        writeln!(f, "solver: {:?}", self.solver.kind)?;
        writeln!(
            f,
            "{}",
            solve_line("forward solve", &self.forward, &self.solver)
        )?;
        if let Some(b) = &self.backward {
            writeln!(f, "{}", solve_line("adjoint solve", b, &self.solver))?;
        }
        writeln!(
            f,
            "{:<8}  {:<8}  {:<14} {:>11} {:>11} {:>10}  {:>13}  result",
            "check", "input", "shape", "max abs err", "max rel err", "grad scale", "tol rel / abs"
        )?;
        for r in self.rows() {
            writeln!(
                f,
                "{:<8}  {:<8}  {:<14} {:>11.3e} {:>11.3e} {:>10.3e}  {:>13}  {}",
                r.kind.to_string(),
                r.input,
                format!("{:?}", r.shape),
                r.max_abs_error,
                r.max_rel_error,
                r.scale,
                format!("{:.0e} / {:.0e}", r.tolerance, r.abs_floor),
                r.verdict()
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        let failed: Vec<String> = self
            .rows()
            .filter(|r| !r.passed)
            .map(|r| format!("{} {}", r.kind, r.input))
            .collect();
        if self.passed() {
            write!(f, "PASSED")
        } else if failed.is_empty() {
            write!(f, "FAILED: the forward solve did not converge")
        } else {
            write!(f, "FAILED: {}", failed.join(", "))
        }
    }
}

/// Checks a cell's gradients in f64: the op-level VJPs of one application and the implicit
/// gradient through [`deq`] (see the [module docs](self) for what is compared and the pass
/// rule).
///
/// `x` is the injection, `params` the parameters `θ` in the order the cell reads them, `z0`
/// the initial state of every solve (its shape is the state's). The returned report prints as
/// a table; [`CellCheckReport::passed`] is the verdict.
///
/// # Panics
/// If the cell maps `z0` to a tensor of another shape.
pub fn check_cell<C: ImplicitCell<f64>>(
    cell: &C,
    x: &Tensor<f64>,
    params: &[Tensor<f64>],
    z0: &Tensor<f64>,
    opts: &CellCheckOptions,
) -> CellCheckReport {
    let cfg = DeqConfig::new(
        opts.solver.clone(),
        opts.solver.clone(),
        BackwardMode::Implicit,
    )
    .unwrap_or_else(|e| panic!("check_cell: {e}"));
    let constants = |ts: &[Tensor<f64>]| -> Vec<Var<f64>> {
        ts.iter().cloned().map(Var::constant).collect::<Vec<_>>()
    };
    let (xc, pc) = (Var::constant(x.clone()), constants(params));

    // The cell's shape contract, then the forward solve at the unperturbed point.
    let out_shape = no_grad(|| {
        cell.apply(&Var::constant(z0.clone()), &xc, &pc)
            .shape()
            .to_vec()
    });
    assert_eq!(
        out_shape,
        z0.shape(),
        "check_cell: the cell maps z of shape {:?} to shape {:?}; it must keep z's shape",
        z0.shape(),
        out_shape
    );
    let solved = no_grad(|| deq(cell, &xc, &pc, z0, &cfg));
    let forward = solved.stats.forward.clone().expect("implicit mode solves");
    let z_star = solved.z.into_value();

    let names: Vec<String> = (0..params.len()).map(|i| format!("param {i}")).collect();
    let rows = |kind: CheckKind, report: &[InputReport], names: &[String], floor: f64| {
        report
            .iter()
            .zip(names)
            .map(|(r, n)| CheckRow::new(kind, n.clone(), r, opts.tolerance, floor))
            .collect::<Vec<_>>()
    };

    // 1. One application, with respect to z, x and every parameter.
    let mut op_inputs = vec![z_star, x.clone()];
    op_inputs.extend(params.iter().cloned());
    let op_opts = GradcheckOptions {
        step: opts.op_step,
        tolerance: f64::INFINITY,
        seed: opts.seed,
        ..GradcheckOptions::default()
    };
    let op_report = gradcheck(|v| cell.apply(&v[0], &v[1], &v[2..]), &op_inputs, &op_opts);
    let mut op_names = vec!["z".to_string(), "x".to_string()];
    op_names.extend(names.iter().cloned());
    let op = rows(
        CheckKind::Op,
        &op_report.inputs,
        &op_names,
        opts.op_abs_floor,
    );

    // 2. The solved map, with respect to x and every parameter.
    let (implicit, backward) = if opts.implicit {
        let mut inputs = vec![x.clone()];
        inputs.extend(params.iter().cloned());
        let recorded: RefCell<Option<DeqStats>> = RefCell::new(None);
        let imp_opts = GradcheckOptions {
            step: opts.implicit_step,
            tolerance: f64::INFINITY,
            seed: opts.seed.wrapping_add(1),
            ..GradcheckOptions::default()
        };
        let report = gradcheck(
            |v| {
                let out = deq(cell, &v[0], &v[1..], z0, &cfg);
                if v[0].is_recorded() {
                    *recorded.borrow_mut() = Some(out.stats.clone());
                }
                out.z
            },
            &inputs,
            &imp_opts,
        );
        let mut imp_names = vec!["x".to_string()];
        imp_names.extend(names.iter().cloned());
        let rows = rows(
            CheckKind::Implicit,
            &report.inputs,
            &imp_names,
            opts.implicit_abs_floor,
        );
        let backward = recorded.into_inner().and_then(|s| s.backward());
        (rows, backward)
    } else {
        (Vec::new(), None)
    };

    let mut warnings = Vec::new();
    if forward.any_diverged() {
        warnings.push(format!(
            "the forward solve diverged for {} of {} samples: the cell is not a contraction \
             here (scale its weights down, damp it, or start from another z0)",
            forward.diverged.iter().filter(|&&d| d).count(),
            forward.diverged.len()
        ));
    } else if !forward.all_converged() {
        warnings.push(format!(
            "the forward solve did not converge (max abs residual {:.2e} after {} iterations, \
             tol {:.0e}): without a fixed point the implicit gradient is not the gradient of \
             anything, so the check fails; raise solver.max_iter, try another solver, or make \
             the cell more contractive",
            forward.max_abs(),
            forward.iterations,
            opts.solver.tol
        ));
    }
    if let Some(b) = &backward {
        if !b.all_converged() {
            warnings.push(format!(
                "the adjoint solve y = y·J_f(z*) + g did not converge (max abs residual {:.2e}): \
                 J_f(z*) may have an eigenvalue near or beyond 1",
                b.max_abs()
            ));
        }
    }
    for r in &op {
        if r.finite
            && r.scale == 0.0
            && r.max_abs_error == 0.0
            && r.shape.iter().product::<usize>() > 0
        {
            warnings.push(format!(
                "{}: the cell's gradient with respect to it is exactly zero (is it used?)",
                r.input
            ));
        }
    }
    CellCheckReport {
        op,
        implicit,
        forward,
        backward,
        solver: opts.solver.clone(),
        warnings,
    }
}
