//! Divergent maps, maps that turn non-finite, and singular Anderson systems: no panic, no NaN
//! in the returned state, `diverged` flagged, the lowest-residual iterate returned.

mod common;

use common::{config, kinds};
use deq_autograd::{Float, Tensor};
use deq_solvers::{solve, SolveStats, SolverKind, StopMode};

fn twice_plus_one<T: Float>(z: &Tensor<T>) -> Tensor<T> {
    z.map(|v| T::from_f64(2.0) * v + T::ONE)
}

/// Index of the smallest finite value.
fn argmin(trace: &[f64]) -> usize {
    (0..trace.len())
        .filter(|&k| trace[k].is_finite())
        .min_by(|&a, &b| trace[a].total_cmp(&trace[b]))
        .expect("a finite residual")
}

/// Solves with every input of `f` recorded.
fn recorded<T: Float>(
    cfg: &deq_solvers::SolverConfig,
    map: impl Fn(&Tensor<T>) -> Tensor<T>,
    z0: &Tensor<T>,
) -> (Tensor<T>, SolveStats, Vec<Vec<T>>) {
    let mut inputs = Vec::new();
    let (z, stats) = solve(
        cfg,
        |z: &Tensor<T>| {
            inputs.push(z.to_vec());
            map(z)
        },
        z0,
    );
    (z, stats, inputs)
}

/// The trace of the stop mode.
fn trace(stats: &SolveStats, mode: StopMode, b: usize) -> &[f64] {
    match mode {
        StopMode::Abs => &stats.abs_trace[b],
        StopMode::Rel => &stats.rel_trace[b],
    }
}

/// Sample `b` of `z` is the input of the call with the lowest residual in `mode`.
fn returns_best_iterate<T: Float>(
    z: &Tensor<T>,
    stats: &SolveStats,
    inputs: &[Vec<T>],
    mode: StopMode,
    b: usize,
) {
    let n = z.numel() / z.dim(0);
    // A sample is evaluated in every call until it freezes, so trace entry k is call k.
    let best = argmin(trace(stats, mode, b));
    assert_eq!(
        &z.data()[b * n..(b + 1) * n],
        &inputs[best][b * n..(b + 1) * n]
    );
}

#[test]
fn naive_on_2z_plus_1_is_flagged_and_returns_the_lowest_residual_iterate() {
    for mode in [StopMode::Abs, StopMode::Rel] {
        let cfg = config(kinds()[0].clone(), 200, 1e-6, mode);
        let z0 = Tensor::<f64>::from_fn(&[3, 8], |k| 0.1 * k as f64);
        let (z, stats, inputs) = recorded(&cfg, twice_plus_one, &z0);
        assert!(stats.diverged.iter().all(|&d| d), "{mode:?}: {stats:?}");
        assert!(!stats.converged.iter().any(|&c| c));
        assert!(z.all_finite());
        // Frozen by the protective stop (abs residual > 1e6 × initial) long before max_iter.
        assert!(stats.iterations < 30, "{}", stats.iterations);
        for b in 0..3 {
            returns_best_iterate(&z, &stats, &inputs, mode, b);
        }
        if mode == StopMode::Abs {
            // Absolute residuals double every step: z0 is the best. (The relative residual
            // |z + 1| / |2z + 1| instead falls towards 1/2, so in Rel mode the best is late.)
            assert_eq!(z, z0);
        }
    }
}

#[test]
fn naive_on_2z_plus_1_without_protection_stops_at_overflow() {
    // protect = inf: the state grows until f overflows (2^128 in f32), then freezes.
    let mut cfg = config(kinds()[0].clone(), 1000, 1e-6, StopMode::Abs);
    cfg.protect = f64::INFINITY;
    cfg.validate().unwrap();
    let z0 = Tensor::<f32>::zeros(&[2, 4]);
    let (z, stats) = solve(&cfg, twice_plus_one, &z0);
    assert!(stats.diverged.iter().all(|&d| d));
    assert!(z.all_finite());
    assert_eq!(z, z0);
    assert!(stats.iterations < 200);
}

#[test]
fn anderson_without_history_diverges_like_naive() {
    // m = 1: the weights are α = 1 and the step is z + βg = f(z).
    let kind = SolverKind::Anderson {
        m: 1,
        lam: 1e-4,
        beta: 1.0,
    };
    let cfg = config(kind, 200, 1e-6, StopMode::Abs);
    let (z, stats) = solve(&cfg, twice_plus_one, &Tensor::<f64>::zeros(&[2, 4]));
    assert!(stats.any_diverged() && z.all_finite());
    assert_eq!(z, Tensor::zeros(&[2, 4]));
}

#[test]
fn accelerated_solvers_on_2z_plus_1_never_return_nan() {
    // Anderson and Broyden are secant methods: on this affine map they may find the repelling
    // fixed point −1 instead of diverging (with λ = 1e-4 Anderson gets within 1e-5 of it, then
    // drifts). Either way: no panic, no NaN, the lowest-residual iterate.
    for kind in [kinds()[1].clone(), kinds()[2].clone()] {
        for mode in [StopMode::Abs, StopMode::Rel] {
            let cfg = config(kind.clone(), 200, 1e-8, mode);
            let z0 = Tensor::<f64>::from_fn(&[3, 8], |k| (k as f64 * 0.7).sin());
            let (z, stats, inputs) = recorded(&cfg, twice_plus_one, &z0);
            assert!(z.all_finite(), "{kind:?}");
            for b in 0..3 {
                // Converged, frozen by the protective stop, or still going at max_iter.
                assert!(
                    stats.converged[b] || stats.diverged[b] || stats.sample_iterations[b] == 200,
                    "{kind:?}: {stats:?}"
                );
                if stats.converged[b] {
                    assert!(z.data()[b * 8..(b + 1) * 8]
                        .iter()
                        .all(|v| (v + 1.0).abs() < 1e-6));
                }
                returns_best_iterate(&z, &stats, &inputs, mode, b);
            }
        }
    }
}

/// Sample 0 of `f(z) = cos z` turns NaN from the `k`-th call on; returns `(z, stats,
/// inputs)`.
fn nan_after(
    kind: &SolverKind,
    k: usize,
    mode: StopMode,
) -> (Tensor<f64>, SolveStats, Vec<Vec<f64>>) {
    let mut inputs = Vec::new();
    let f = |z: &Tensor<f64>| {
        inputs.push(z.to_vec());
        let calls = inputs.len();
        let mut out = z.map(f64::cos);
        if calls >= k {
            out.data_mut()[..4].fill(f64::NAN);
        }
        out
    };
    let cfg = config(kind.clone(), 100, 1e-12, mode);
    let (z, stats) = solve(&cfg, f, &Tensor::zeros(&[3, 4]));
    (z, stats, inputs)
}

#[test]
fn map_returning_nan_after_k_steps_freezes_that_sample_at_its_best_iterate() {
    for kind in kinds() {
        for mode in [StopMode::Abs, StopMode::Rel] {
            let k = 3;
            let (z, stats, inputs) = nan_after(&kind, k, mode);
            assert!(z.all_finite(), "{kind:?}");
            assert!(
                stats.diverged[0] && !stats.converged[0],
                "{kind:?}: {stats:?}"
            );
            assert!(!stats.diverged[1] && !stats.diverged[2]);
            assert!(
                stats.converged[1] && stats.converged[2],
                "{kind:?}: {stats:?}"
            );
            // k − 1 finite residuals, then the NaN one that froze it.
            let trace = match mode {
                StopMode::Abs => &stats.abs_trace[0],
                StopMode::Rel => &stats.rel_trace[0],
            };
            assert_eq!(trace.len(), k);
            assert!(trace[k - 1].is_nan());
            // The returned value is the input of the call with the lowest finite residual.
            let best = argmin(trace);
            assert_eq!(&z.data()[..4], &inputs[best][..4], "{kind:?}");
            // After freezing, f only ever sees that best iterate for sample 0.
            for later in &inputs[k..] {
                assert_eq!(&later[..4], &inputs[best][..4]);
            }
        }
    }
}

#[test]
fn non_finite_from_the_first_call_returns_z0_after_one_call() {
    for kind in kinds() {
        let cfg = config(kind.clone(), 50, 1e-6, StopMode::Rel);
        let z0 = Tensor::<f32>::full(&[2, 3], 0.5);
        let (z, stats) = solve(&cfg, |z: &Tensor<f32>| z.map(|_| f32::INFINITY), &z0);
        assert_eq!(z, z0);
        assert_eq!(stats.f_evals, 1, "{kind:?}");
        assert!(stats.diverged.iter().all(|&d| d));
        assert_eq!(stats.lowest_abs, vec![f64::INFINITY; 2]);
    }
}

#[test]
fn non_finite_start_is_zeroed() {
    for kind in kinds() {
        let cfg = config(kind.clone(), 100, 1e-8, StopMode::Abs);
        let z0 = Tensor::<f64>::from_vec(vec![f64::NAN, 1.0, f64::INFINITY, 2.0], &[2, 2]);
        let (z, stats) = solve(&cfg, |z: &Tensor<f64>| z.map(|v| 0.5 * v + 1.0), &z0);
        assert!(stats.all_converged(), "{kind:?}: {stats:?}");
        assert!(z.data().iter().all(|v| (v - 2.0).abs() < 1e-7));
    }
}

#[test]
fn anderson_with_constant_residual_directions_does_not_panic() {
    // f(z) = z + c: every residual is c, so G Gᵀ = ‖c‖² 11ᵀ has rank 1.
    for lam in [0.0, 1e-4] {
        let kind = SolverKind::Anderson {
            m: 6,
            lam,
            beta: 1.0,
        };
        let cfg = config(kind, 40, 1e-6, StopMode::Abs);
        let c = Tensor::<f64>::from_fn(&[2, 5], |k| 1.0 + k as f64);
        let f = |z: &Tensor<f64>| {
            let mut out = z.clone();
            out.data_mut()
                .iter_mut()
                .zip(c.data())
                .for_each(|(o, c)| *o += c);
            out
        };
        let (z, stats) = solve(&cfg, f, &Tensor::zeros(&[2, 5]));
        assert!(z.all_finite());
        assert_eq!(stats.iterations, 40);
        assert!(!stats.any_diverged() && !stats.all_converged());
        if lam == 0.0 {
            // Exactly singular: every Anderson step fell back to a plain step.
            assert!(stats.fallback_steps > 0, "{stats:?}");
        }
    }
}

#[test]
fn anderson_with_more_history_than_dimensions_falls_back_and_converges() {
    // One value per sample: with 3 or more residuals G Gᵀ is singular and λ = 0.
    let kind = SolverKind::Anderson {
        m: 6,
        lam: 0.0,
        beta: 1.0,
    };
    let cfg = config(kind, 100, 1e-12, StopMode::Abs);
    let (z, stats) = solve(
        &cfg,
        |z: &Tensor<f64>| z.map(f64::cos),
        &Tensor::zeros(&[3, 1]),
    );
    assert!(stats.all_converged(), "{stats:?}");
    assert!(z.data().iter().all(|v| (v.cos() - v).abs() < 1e-12));
}

#[test]
fn identity_map_converges_at_once() {
    for kind in kinds() {
        let cfg = config(kind.clone(), 10, 1e-6, StopMode::Abs);
        let z0 = Tensor::<f64>::full(&[2, 3], 4.0);
        let (z, stats) = solve(&cfg, |z: &Tensor<f64>| z.clone(), &z0);
        assert_eq!(z, z0);
        assert!(stats.all_converged());
        assert_eq!(stats.f_evals, 1, "{kind:?}");
    }
}

#[test]
fn empty_batches_are_converged_without_calling_f() {
    let cfg = config(kinds()[2].clone(), 10, 1e-6, StopMode::Abs);
    for shape in [&[0usize, 4][..], &[3, 0][..]] {
        let (z, stats) = solve(
            &cfg,
            |_: &Tensor<f64>| unreachable!(),
            &Tensor::zeros(shape),
        );
        assert_eq!(z.shape(), shape);
        assert_eq!(stats.f_evals, 0);
        assert!(stats.all_converged());
    }
}
