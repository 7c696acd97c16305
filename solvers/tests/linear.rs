//! Known-answer tests in f64: `z = A z + c` with `‖A‖₂ < 1`, against faer's direct solve of
//! `(I − A) z = c`. Every solver must reach an absolute residual ≤ 1e-10 and match the
//! solution to 1e-9.

mod common;

use common::{abs_residuals, config, kinds, Linear};
use deq_autograd::{Rng, Tensor};
use deq_solvers::{solve, SolverKind, StopMode};
use proptest::prelude::*;

/// Solves one problem with `kind` and checks residual, solution and stats.
fn check(problem: &Linear, kind: &SolverKind) {
    let shape = problem.c.shape().to_vec();
    // tol 1e-11 in Abs mode: error ≤ residual / (1 − ‖A‖) ≤ 1e-10 for ‖A‖ ≤ 0.9.
    let cfg = config(kind.clone(), 2000, 1e-11, StopMode::Abs);
    let (z, stats) = solve(
        &cfg,
        |z: &Tensor<f64>| problem.apply(z),
        &Tensor::zeros(&shape),
    );
    assert!(stats.all_converged(), "{kind:?}: {stats:?}");
    assert!(!stats.any_diverged());
    let residuals = abs_residuals(&z, &problem.apply(&z));
    for (b, r) in residuals.iter().enumerate() {
        assert!(*r <= 1e-10, "{kind:?}: sample {b} residual {r}");
        // The reported lowest residual is the returned iterate's (Abs mode).
        assert!(
            (r - stats.lowest_abs[b]).abs() <= 1e-15,
            "{kind:?}: {r} vs {}",
            stats.lowest_abs[b]
        );
    }
    let err = z
        .data()
        .iter()
        .zip(problem.exact.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err <= 1e-9, "{kind:?}: max error {err}");
    let extra = usize::from(matches!(kind, SolverKind::Broyden { .. }));
    assert_eq!(stats.f_evals, stats.iterations + extra);
    for b in 0..shape[0] {
        assert_eq!(stats.abs_trace[b].len(), stats.sample_iterations[b] + extra);
        assert_eq!(stats.rel_trace[b].len(), stats.abs_trace[b].len());
    }
}

#[test]
fn every_solver_matches_the_direct_solve() {
    let mut rng = Rng::new(3);
    let problem = Linear::new(&mut rng, 4, 32, 0.9);
    for kind in kinds() {
        check(&problem, &kind);
    }
}

#[test]
fn damped_naive_and_mixed_anderson_match_the_direct_solve() {
    let mut rng = Rng::new(4);
    let problem = Linear::new(&mut rng, 3, 16, 0.8);
    check(&problem, &SolverKind::Naive { tau: 0.7 });
    check(
        &problem,
        &SolverKind::Anderson {
            m: 3,
            lam: 1e-10,
            beta: 0.6,
        },
    );
}

#[test]
fn rank_3_state_is_batched_on_its_first_dimension() {
    // [B, 4, 8] is B samples of 32 values.
    let mut rng = Rng::new(5);
    let problem = Linear::new(&mut rng, 2, 32, 0.7);
    let cfg = config(kinds()[2].clone(), 500, 1e-12, StopMode::Abs);
    let (z, stats) = solve(
        &cfg,
        |z: &Tensor<f64>| problem.apply(&z.reshape(&[2, 32])).reshape(&[2, 4, 8]),
        &Tensor::zeros(&[2, 4, 8]),
    );
    assert_eq!(z.shape(), &[2, 4, 8]);
    assert_eq!(stats.converged.len(), 2);
    let err = z
        .data()
        .iter()
        .zip(problem.exact.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err <= 1e-9);
}

#[test]
fn f32_linear_problem_reaches_single_precision() {
    let mut rng = Rng::new(6);
    let problem = Linear::new(&mut rng, 4, 32, 0.9);
    let (a, c) = (problem.a.cast::<f32>(), problem.c.cast::<f32>());
    for kind in kinds() {
        let cfg = config(kind.clone(), 500, 1e-5, StopMode::Rel);
        let (z, stats) = solve(
            &cfg,
            |z: &Tensor<f32>| {
                let mut out = deq_autograd::matmul_tensor(z, &a, false, true);
                out.data_mut()
                    .iter_mut()
                    .zip(c.data())
                    .for_each(|(o, &c)| *o += c);
                out
            },
            &Tensor::zeros(&[4, 32]),
        );
        assert!(stats.all_converged(), "{kind:?}: {stats:?}");
        let err = z
            .data()
            .iter()
            .zip(problem.exact.data())
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        assert!(err <= 1e-3, "{kind:?}: {err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random contractive problems: any size, batch and norm below 0.9.
    #[test]
    fn random_contractive_problems(
        seed in 0u64..1_000_000,
        b in 1usize..5,
        n in 1usize..24,
        norm in 0.05f64..0.9,
    ) {
        let mut rng = Rng::new(seed);
        let problem = Linear::new(&mut rng, b, n, norm);
        for kind in kinds() {
            check(&problem, &kind);
        }
    }
}
