//! The user-facing cell gradient check can pass and can fail: a cell with a correct custom op
//! passes, the same cell with a deliberately wrong VJP is flagged (and the blame lands on the
//! inputs the bug touches), and a forward solve that does not converge fails the check.

use deq_autograd::{custom_op, matmul_tensor, Rng, Tensor, Var};
use deq_solvers::implicit::{check_cell, CellCheckOptions, CellCheckReport, CheckKind};
use deq_solvers::{SolverConfig, SolverKind, StopMode};

/// `tanh` as a custom op whose VJP claims `∂v = factor·(1 − y²)·g` (correct for `factor = 1`).
fn tanh_op(v: &Var<f64>, factor: f64) -> Var<f64> {
    let y = v.value().map(f64::tanh);
    let y_saved = y.clone();
    custom_op(
        y,
        &[v],
        Box::new(move |g: &Tensor<f64>, _needs: &[bool]| {
            let d = Tensor::from_fn(g.shape(), |i| {
                let y = y_saved.data()[i];
                factor * (1.0 - y * y) * g.data()[i]
            });
            vec![Some(d)]
        }),
    )
}

/// `x·Uᵀ` as a custom op whose VJP scales `∂U` by `u_factor` (correct for 1) and gets `∂x`
/// right.
fn project_op(x: &Var<f64>, u: &Var<f64>, u_factor: f64) -> Var<f64> {
    let (xv, uv) = (x.value().clone(), u.value().clone());
    let value = matmul_tensor(&xv, &uv, false, true);
    custom_op(
        value,
        &[x, u],
        Box::new(move |g: &Tensor<f64>, needs: &[bool]| {
            let gx = needs[0].then(|| matmul_tensor(g, &uv, false, false));
            let gu = needs[1].then(|| matmul_tensor(g, &xv, true, false).map(|a| a * u_factor));
            vec![gx, gu]
        }),
    )
}

/// `z ↦ tanh(z·Wᵀ + x·Uᵀ + b)` built from the two custom ops; params `[W, U, b]`.
fn cell(tanh_factor: f64, u_factor: f64) -> impl Fn(&Var<f64>, &Var<f64>, &[Var<f64>]) -> Var<f64> {
    move |z, x, p| {
        let pre = z
            .linear(&p[0], None)
            .add(&project_op(x, &p[1], u_factor))
            .add(&p[2]);
        tanh_op(&pre, tanh_factor)
    }
}

struct Problem {
    x: Tensor<f64>,
    params: Vec<Tensor<f64>>,
    z0: Tensor<f64>,
}

fn problem(w_scale: f64) -> Problem {
    let (batch, hidden, input) = (2, 5, 3);
    let mut rng = Rng::new(7);
    let w = Tensor::randn(
        &[hidden, hidden],
        w_scale / (hidden as f64).sqrt(),
        &mut rng,
    );
    let u = Tensor::randn(&[hidden, input], 1.0 / (input as f64).sqrt(), &mut rng);
    let b = Tensor::randn(&[hidden], 0.1, &mut rng);
    Problem {
        x: Tensor::randn(&[batch, input], 1.0, &mut rng),
        params: vec![w, u, b],
        z0: Tensor::zeros(&[batch, hidden]),
    }
}

fn run(tanh_factor: f64, u_factor: f64, opts: &CellCheckOptions) -> CellCheckReport {
    let p = problem(0.5);
    check_cell(&cell(tanh_factor, u_factor), &p.x, &p.params, &p.z0, opts)
}

fn failing(report: &CellCheckReport, kind: CheckKind) -> Vec<String> {
    report
        .rows()
        .filter(|r| r.kind == kind && !r.passed)
        .map(|r| r.input.clone())
        .collect()
}

#[test]
fn a_correct_cell_passes_both_checks() {
    let report = run(1.0, 1.0, &CellCheckOptions::default());
    println!("{report}");
    assert!(report.passed(), "{report}");
    let names: Vec<&str> = report.op.iter().map(|r| r.input.as_str()).collect();
    assert_eq!(names, ["z", "x", "param 0", "param 1", "param 2"]);
    let names: Vec<&str> = report.implicit.iter().map(|r| r.input.as_str()).collect();
    assert_eq!(names, ["x", "param 0", "param 1", "param 2"]);
    assert!(report.max_rel_error() < 1e-6, "{report}");
    assert!(report.forward.all_converged() && report.forward.max_abs() < 1e-12);
    let bwd = report.backward.as_ref().expect("adjoint solve stats");
    assert!(bwd.all_converged(), "{report}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let text = report.to_string();
    assert!(text.contains("PASSED") && !text.contains("FAIL"), "{text}");
}

#[test]
fn a_wrong_vjp_in_a_custom_op_is_flagged() {
    // tanh's VJP off by 30%: every gradient flows through it, so every row fails.
    let report = run(1.3, 1.0, &CellCheckOptions::default());
    println!("{report}");
    assert!(!report.passed());
    assert!(!report.op_passed() && !report.implicit_passed());
    assert_eq!(
        failing(&report, CheckKind::Op),
        ["z", "x", "param 0", "param 1", "param 2"]
    );
    assert_eq!(
        failing(&report, CheckKind::Implicit),
        ["x", "param 0", "param 1", "param 2"]
    );
    assert!(report.max_rel_error() > 0.05, "{report}");
    let text = report.to_string();
    assert!(text.contains("FAIL (worst element"), "{text}");
    assert!(text.contains("FAILED: op z, op x"), "{text}");
}

#[test]
fn the_blame_lands_on_the_input_whose_vjp_is_wrong() {
    // Only ∂U of the projection is wrong (10%): U is `param 1`, the rest passes.
    let report = run(1.0, 1.1, &CellCheckOptions::default());
    println!("{report}");
    assert!(!report.passed());
    assert_eq!(failing(&report, CheckKind::Op), ["param 1"]);
    assert_eq!(failing(&report, CheckKind::Implicit), ["param 1"]);
}

#[test]
fn a_slightly_wrong_vjp_fails_at_the_default_tolerance() {
    let report = run(1.0 + 1e-4, 1.0, &CellCheckOptions::default());
    assert!(!report.passed(), "a VJP off by 1e-4 passed:\n{report}");
}

#[test]
fn a_forward_solve_that_does_not_converge_fails_with_a_warning() {
    let p = problem(0.5);
    let opts = CellCheckOptions {
        solver: SolverConfig::new(SolverKind::Naive { tau: 1.0 }, 3, 1e-12, StopMode::Abs).unwrap(),
        implicit: false,
        ..CellCheckOptions::default()
    };
    let report = check_cell(&cell(1.0, 1.0), &p.x, &p.params, &p.z0, &opts);
    println!("{report}");
    assert!(report.op_passed(), "the op-level VJPs are right:\n{report}");
    assert!(report.implicit.is_empty() && report.backward.is_none());
    assert!(!report.forward.all_converged());
    assert!(!report.passed());
    let text = report.to_string();
    assert!(text.contains("did not converge"), "{text}");
    assert!(
        text.contains("FAILED: the forward solve did not converge"),
        "{text}"
    );
}

#[test]
fn an_unused_parameter_is_reported_and_tiny_gradients_pass_by_the_floor() {
    // Params [W, U, b, unused, s]: `unused` is never read (exactly zero gradient, a warning);
    // `s` enters as 1e-12·s, so its gradients (~1e-12) pass by the absolute floor.
    let p = problem(0.5);
    let mut params = p.params.clone();
    params.push(Tensor::ones(&[2]));
    params.push(Tensor::from_vec(vec![0.3; 5], &[5]));
    let f = |z: &Var<f64>, x: &Var<f64>, q: &[Var<f64>]| {
        cell(1.0, 1.0)(z, x, &q[..3]).add(&q[4].mul_scalar(1e-12))
    };
    let report = check_cell(&f, &p.x, &params, &p.z0, &CellCheckOptions::default());
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("param 3") && w.contains("exactly zero")),
        "{:?}",
        report.warnings
    );
}
