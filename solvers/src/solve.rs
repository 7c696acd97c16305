//! The solver entry point: one driver loop shared by every method.

use crate::anderson::Anderson;
use crate::broyden::Broyden;
use crate::config::{SolverConfig, SolverKind};
use crate::monitor::Monitor;
use crate::naive::Naive;
use crate::stats::SolveStats;
use crate::step::Stepper;
use deq_autograd::{Float, Tensor};

/// Solves `z = f(z)` per sample of the batch `z0` (shape `[B, ...]`, each sample viewed as `N`
/// contiguous values; a rank-0 `z0` is one sample of one value) with the method of `cfg`.
///
/// `f` maps the whole batch to a batch of the same shape; it is called once per iteration
/// (plus once for the initial residual with Broyden). Per sample:
/// - residuals `abs = ‖f(z) − z‖`, `rel = abs / (‖f(z)‖ + 1e-9)` are accumulated in f64;
/// - a sample converges when its residual in `cfg.stop_mode` is below `cfg.tol`; from then on
///   it is frozen: its state is no longer updated and it is passed to `f` unchanged;
/// - the protective stop freezes a sample whose absolute residual exceeds `cfg.protect ×` its
///   initial one, or whose `f(z)` is not finite, resetting it to its lowest finite iterate and
///   flagging it diverged;
/// - the returned value is the iterate with the lowest residual in `cfg.stop_mode` (for a
///   converged sample, its value when it converged), never the last one by default.
///
/// The batch stops when no sample is active or after `cfg.max_iter` iterations. The returned
/// tensor has `z0`'s shape and contains no NaN: a sample that never had a finite residual gets
/// `z0` back, with any non-finite entries of `z0` replaced by 0 before the first call of `f`.
/// Divergence and singular Anderson systems never panic.
///
/// Solver state is allocated once before the first iteration (traces with capacity
/// `max_iter + 1`, Anderson's `min(m, max_iter)` slots, Broyden's `min(memory, max_iter − 1)`
/// pairs); the loop itself allocates nothing beyond what `f` allocates, provided `f` does not
/// keep a handle on its input (the state is updated in place). The iterate starts as a copy
/// of `z0`; [`solve_from`] takes `z0` by value and iterates in its buffer instead.
///
/// # Panics
/// If `cfg` fails [`SolverConfig::validate`] (only possible after editing its fields by hand),
/// or if `f` returns a tensor whose shape differs from `z0`'s: both are programmer errors.
///
/// # Example
/// ```
/// use deq_autograd::Tensor;
/// use deq_solvers::{solve, SolverConfig};
/// // z = 0.5 z + 1 in each of 2 samples of 3 values: the fixed point is 2.
/// let z0 = Tensor::<f64>::zeros(&[2, 3]);
/// let mut cfg = SolverConfig::broyden();
/// cfg.tol = 1e-10;
/// let (z, stats) = solve(&cfg, |z: &Tensor<f64>| z.map(|v| 0.5 * v + 1.0), &z0);
/// assert!(stats.all_converged());
/// assert!(z.data().iter().all(|v| (v - 2.0).abs() < 1e-8));
/// ```
pub fn solve<T: Float>(
    cfg: &SolverConfig,
    f: impl FnMut(&Tensor<T>) -> Tensor<T>,
    z0: &Tensor<T>,
) -> (Tensor<T>, SolveStats) {
    solve_from(cfg, f, z0.clone())
}

/// [`solve`] from a `z0` given by value: when the caller keeps no other handle on it, the
/// iterate is updated in `z0`'s own buffer, which saves one copy of the batch for the whole
/// solve (the implicit layer's adjoint solve starts from zeros this way).
pub fn solve_from<T: Float>(
    cfg: &SolverConfig,
    mut f: impl FnMut(&Tensor<T>) -> Tensor<T>,
    z0: Tensor<T>,
) -> (Tensor<T>, SolveStats) {
    if let Err(e) = cfg.validate() {
        panic!("deq_solvers::solve: {e}");
    }
    let b = if z0.ndim() == 0 { 1 } else { z0.dim(0) };
    let n = z0.numel().checked_div(b).unwrap_or(0);
    if n == 0 {
        return empty(cfg, b, &z0);
    }
    #[cfg(feature = "cuda")]
    if z0.gpu().is_some() {
        return crate::gpu::solve(cfg, f, &z0, b, n);
    }
    let whole_batch = |z: &Tensor<T>, _: &[bool], previous: Option<Tensor<T>>| {
        // Release f's previous output before the next call: one live output at a time.
        drop(previous);
        (checked(&mut f, z), b)
    };
    solve_on_cpu(cfg, whole_batch, z0, b, n)
}

/// Runs the method of `cfg` on the host with `eval` as the evaluation of `f`.
pub(crate) fn solve_on_cpu<T: Float>(
    cfg: &SolverConfig,
    eval: impl Evaluate<T>,
    z0: Tensor<T>,
    b: usize,
    n: usize,
) -> (Tensor<T>, SolveStats) {
    match cfg.kind {
        SolverKind::Naive { tau } => drive(cfg, eval, z0, b, n, Naive::new(n, tau)),
        SolverKind::Anderson { m, lam, beta } => {
            let stepper = Anderson::new(b, n, m, lam, beta, cfg.max_iter);
            drive(cfg, eval, z0, b, n, stepper)
        }
        SolverKind::Broyden { memory } => {
            let stepper = Broyden::new(b, n, memory, cfg.max_iter);
            drive(cfg, eval, z0, b, n, stepper)
        }
    }
}

/// One evaluation of `f` inside the driver: `(z, active, previous output)` to `(f(z), rows
/// evaluated)`. The result must hold `f(z)` for every active sample; what it holds for a
/// frozen one is never read (neither the monitor nor the steppers look at frozen samples).
pub(crate) trait Evaluate<T: Float>:
    FnMut(&Tensor<T>, &[bool], Option<Tensor<T>>) -> (Tensor<T>, usize)
{
}

impl<T: Float, F> Evaluate<T> for F where
    F: FnMut(&Tensor<T>, &[bool], Option<Tensor<T>>) -> (Tensor<T>, usize)
{
}

/// A batch without values: nothing to solve, every sample has converged.
fn empty<T: Float>(cfg: &SolverConfig, b: usize, z0: &Tensor<T>) -> (Tensor<T>, SolveStats) {
    let stats = SolveStats {
        sample_iterations: vec![0; b],
        abs_trace: vec![Vec::new(); b],
        rel_trace: vec![Vec::new(); b],
        lowest_abs: vec![0.0; b],
        lowest_rel: vec![0.0; b],
        converged: vec![true; b],
        diverged: vec![false; b],
        ..SolveStats::default()
    };
    let _ = cfg;
    (z0.clone(), stats)
}

/// The loop shared by every method: evaluate, observe (record, freeze), step.
fn drive<T: Float, S: Stepper<T>>(
    cfg: &SolverConfig,
    mut eval: impl Evaluate<T>,
    mut z: Tensor<T>,
    b: usize,
    n: usize,
    mut stepper: S,
) -> (Tensor<T>, SolveStats) {
    let shape = z.shape().to_vec();
    if !z.all_finite() {
        z.data_mut()
            .iter_mut()
            .filter(|v| !v.is_finite())
            .for_each(|v| *v = T::ZERO);
    }
    let mut monitor = Monitor::new(cfg, b, n, z.data());
    let extra = S::EXTRA_EVALS;
    let max_evals = cfg.max_iter + extra;
    let mut evals = 1;
    let (mut fz, mut rows) = eval(&z, monitor.active(), None);
    loop {
        monitor.observe(z.data_mut(), fz.data(), evals - extra);
        if evals == max_evals || !monitor.any_active() {
            break;
        }
        stepper.step(z.data_mut(), fz.data(), monitor.active());
        let (next, r) = eval(&z, monitor.active(), Some(fz));
        fz = next;
        rows += r;
        evals += 1;
    }
    drop(fz);
    let (best, mut stats) = monitor.finish(evals - extra, evals);
    stats.f_rows = rows;
    stepper.report(&mut stats);
    drop(z);
    (Tensor::from_vec(best, &shape), stats)
}

/// One call of `f`, checking the shape it returns.
pub(crate) fn checked<T: Float>(
    f: &mut impl FnMut(&Tensor<T>) -> Tensor<T>,
    z: &Tensor<T>,
) -> Tensor<T> {
    let fz = f(z);
    assert_eq!(
        fz.shape(),
        z.shape(),
        "deq_solvers::solve: f returned shape {:?} for a state of shape {:?}",
        fz.shape(),
        z.shape()
    );
    fz
}
