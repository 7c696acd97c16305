//! `solve_rows` and `RowWise` cells: a solve that evaluates only the active samples must give
//! the result, statistics and gradients of the whole-batch solve, and evaluate fewer rows.

mod common;

use common::kinds;
use deq_autograd::{Rng, Tape, Tensor, Var};
use deq_solvers::{
    deq, solve, solve_rows, BackwardMode, DeqConfig, RowWise, SolveStats, SolverConfig, SolverKind,
    StopMode,
};
use proptest::prelude::*;

/// `f(z)_s = tanh(c_s · W z_s + x_s)` row by row, with plain loops, so that a row's value
/// cannot depend on which other rows are in the call.
struct RowCell {
    n: usize,
    w: Vec<f64>,
    x: Vec<f64>,
    c: Vec<f64>,
}

impl RowCell {
    fn new(b: usize, n: usize, rng: &mut Rng) -> Self {
        let w = Tensor::<f64>::randn(&[n, n], 1.0 / (n as f64).sqrt(), rng).into_vec();
        let x = Tensor::<f64>::randn(&[b, n], 1.0, rng).into_vec();
        // Contraction factors spread over samples so that they converge at different times.
        let c = Tensor::<f64>::rand_uniform(&[b], 0.05, 0.9, rng).into_vec();
        RowCell { n, w, x, c }
    }

    fn row(&self, s: usize, z: &[f64], out: &mut [f64]) {
        let n = self.n;
        for (i, o) in out.iter_mut().enumerate() {
            let dot: f64 = (0..n).map(|j| self.w[i * n + j] * z[j]).sum();
            *o = (self.c[s] * dot + self.x[s * n + i]).tanh();
        }
    }

    fn apply(&self, z: &Tensor<f64>, rows: &[usize]) -> Tensor<f64> {
        let n = self.n;
        let mut out = vec![0.0; z.numel()];
        for (k, &s) in rows.iter().enumerate() {
            self.row(
                s,
                &z.data()[k * n..(k + 1) * n],
                &mut out[k * n..(k + 1) * n],
            );
        }
        Tensor::from_vec(out, z.shape())
    }
}

fn assert_same_stats(full: &SolveStats, part: &SolveStats) {
    assert_eq!(full.iterations, part.iterations);
    assert_eq!(full.f_evals, part.f_evals);
    assert_eq!(full.sample_iterations, part.sample_iterations);
    assert_eq!(full.converged, part.converged);
    assert_eq!(full.diverged, part.diverged);
    assert_eq!(full.abs_trace, part.abs_trace);
    assert_eq!(full.rel_trace, part.rel_trace);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The same iterates bit for bit, the same statistics, and `f_rows` counts exactly the
    /// observations each sample took part in while active.
    #[test]
    fn solve_rows_matches_the_whole_batch_solve(
        b in 2usize..7,
        n in 1usize..9,
        seed in 0u64..1000,
        kind in 0usize..3,
        tol_exp in 6i32..11,
    ) {
        let mut rng = Rng::new(seed);
        let cell = RowCell::new(b, n, &mut rng);
        let z0 = Tensor::<f64>::randn(&[b, n], 0.5, &mut rng);
        let cfg = SolverConfig::new(kinds()[kind].clone(), 60, 10f64.powi(-tol_exp), StopMode::Rel)
            .unwrap();
        let all: Vec<usize> = (0..b).collect();
        let (z_full, full) = solve(&cfg, |z: &Tensor<f64>| cell.apply(z, &all), &z0);
        let mut calls = Vec::new();
        let (z_part, part) = solve_rows(
            &cfg,
            |z: &Tensor<f64>, rows: &[usize]| {
                assert_eq!(z.dim(0), rows.len());
                calls.push(rows.len());
                cell.apply(z, rows)
            },
            &z0,
        );
        prop_assert_eq!(z_full.data(), z_part.data());
        assert_same_stats(&full, &part);
        prop_assert_eq!(full.f_rows, b * full.f_evals);
        let observed: usize = part.abs_trace.iter().map(Vec::len).sum();
        prop_assert_eq!(part.f_rows, observed);
        prop_assert_eq!(part.f_rows, calls.iter().sum::<usize>());
        let (lo, hi) = (
            part.sample_iterations.iter().min().unwrap(),
            part.sample_iterations.iter().max().unwrap(),
        );
        if lo < hi {
            prop_assert!(part.f_rows < b * part.f_evals);
        }
    }
}

/// A fixed case where the saving is large: one sample far more contractive than the others.
#[test]
fn frozen_samples_are_not_evaluated() {
    let mut rng = Rng::new(3);
    let mut cell = RowCell::new(4, 6, &mut rng);
    cell.c = vec![0.01, 0.9, 0.9, 0.9];
    let z0 = Tensor::<f64>::zeros(&[4, 6]);
    let cfg = SolverConfig::new(SolverKind::Naive { tau: 1.0 }, 200, 1e-10, StopMode::Abs).unwrap();
    let mut seen_alone = Vec::new();
    let (_, stats) = solve_rows(
        &cfg,
        |z: &Tensor<f64>, rows: &[usize]| {
            if rows.len() < 4 {
                seen_alone.push(rows.to_vec());
            }
            cell.apply(z, rows)
        },
        &z0,
    );
    assert!(stats.all_converged());
    assert!(stats.sample_iterations[0] < stats.sample_iterations[1]);
    assert!(!seen_alone.is_empty());
    assert!(seen_alone.iter().all(|r| !r.contains(&0)));
    assert!(stats.f_rows < 4 * stats.f_evals);
}

/// `tanh(z·Wᵀ + x)` through the engine, with rows of `x` scaled so that samples saturate (and
/// converge) at different speeds.
fn tanh_cell(z: &Var<f64>, x: &Var<f64>, p: &[Var<f64>]) -> Var<f64> {
    z.linear(&p[0], None).add(x).tanh()
}

fn layer_case(kind: SolverKind, wrap: bool) -> (Tensor<f64>, Vec<Tensor<f64>>, SolveStats) {
    let (b, n) = (6, 10);
    let mut rng = Rng::new(11);
    let w = Tensor::<f64>::randn(&[n, n], 0.9 / (n as f64).sqrt(), &mut rng);
    let scale: Vec<f64> = (0..b).map(|s| 0.2 + s as f64).collect();
    let x = Tensor::<f64>::randn(&[b, n], 1.0, &mut rng);
    let x = Tensor::from_fn(&[b, n], |i| x.data()[i] * scale[i / n]);
    let s = SolverConfig::new(kind, 400, 1e-10, StopMode::Rel).unwrap();
    let cfg = DeqConfig::new(s.clone(), s, BackwardMode::Implicit).unwrap();
    let tape = Tape::new();
    let (wv, xv) = (tape.leaf(w), tape.leaf(x));
    let z0 = Tensor::zeros(&[b, n]);
    let out = if wrap {
        deq(
            &RowWise(tanh_cell),
            &xv,
            std::slice::from_ref(&wv),
            &z0,
            &cfg,
        )
    } else {
        deq(&tanh_cell, &xv, std::slice::from_ref(&wv), &z0, &cfg)
    };
    let loss = out.z.mul(&out.z).sum_all();
    let grads = tape.vjp(&[&loss], &[&Tensor::scalar(1.0)], &[&wv, &xv]);
    let fwd = out.stats.forward.clone().unwrap();
    (out.z.value().clone(), grads, fwd)
}

/// The implicit layer with a `RowWise` cell: the same equilibrium and gradients as with the
/// plain cell (to rounding: a row's product may round differently in a smaller batch), with
/// fewer rows evaluated in the forward solve.
#[test]
fn a_row_wise_cell_gives_the_same_equilibrium_and_gradients() {
    for kind in kinds() {
        let (z_full, g_full, s_full) = layer_case(kind.clone(), false);
        let (z_part, g_part, s_part) = layer_case(kind.clone(), true);
        let close = |a: &Tensor<f64>, b: &Tensor<f64>, tol: f64| {
            let d: f64 = a
                .data()
                .iter()
                .zip(b.data())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(
                d <= tol * (1.0 + b.norm()),
                "{kind:?}: max difference {d:e}"
            );
        };
        close(&z_part, &z_full, 1e-9);
        for (a, b) in g_part.iter().zip(&g_full) {
            close(a, b, 1e-8);
        }
        assert!(s_part.all_converged() && s_full.all_converged(), "{kind:?}");
        assert_eq!(s_full.f_rows, 6 * s_full.f_evals);
        assert!(
            s_part.f_rows < 6 * s_part.f_evals,
            "{kind:?}: {} rows in {} evaluations of 6",
            s_part.f_rows,
            s_part.f_evals
        );
    }
}

/// `gather_rows` stacks the chosen rows in order, also for rows of no values.
#[test]
fn gather_rows_stacks_the_chosen_rows() {
    let t = Tensor::<f64>::from_fn(&[4, 2, 3], |i| i as f64);
    let g = deq_solvers::gather_rows(&t, &[3, 1]);
    assert_eq!(g.shape(), &[2, 2, 3]);
    assert_eq!(&g.data()[..6], &t.data()[18..24]);
    assert_eq!(&g.data()[6..], &t.data()[6..12]);
    let empty = deq_solvers::gather_rows(&Tensor::<f64>::zeros(&[3, 0]), &[0, 2]);
    assert_eq!(empty.shape(), &[2, 0]);
}
