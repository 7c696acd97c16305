//! The solvers on CUDA tensors: the same methods, stop rules and statistics as the host
//! solvers, with the iterate, `f(z)` and every history kept on the device.
//!
//! Per iteration the host sees only scalars: the per-sample residual sums (for the stop rule
//! and the best-iterate bookkeeping, shared with the CPU path through [`Tracker`]) and the
//! per-sample dot products from which Broyden's and Anderson's coefficients are formed; the
//! coefficients go back as small uploads. The device work is the kernels of
//! `deq_cuda::ops::solver`.

mod anderson;
mod broyden;

use crate::config::{SolverConfig, SolverKind};
use crate::monitor::Tracker;
use crate::stats::SolveStats;
use deq_autograd::{Float, Tensor};
use deq_cuda::ops::solver as k;
use deq_cuda::GpuBuffer;

/// One method's update on device buffers (the GPU twin of `step::Stepper`).
pub(crate) trait GpuStepper<T: Float> {
    /// f calls before the first iteration (see `Stepper::EXTRA_EVALS`).
    const EXTRA_EVALS: usize;
    /// Overwrites every active sample of `z` with its next iterate, given `fz = f(z)`.
    fn step(&mut self, z: &mut GpuBuffer<T>, fz: &GpuBuffer<T>, active: &[bool]);
    /// Adds the method's counters to `stats`.
    fn report(&self, stats: &mut SolveStats);
}

/// Damped fixed-point iteration on the device.
struct Naive {
    n: usize,
    tau: f64,
}

impl<T: Float> GpuStepper<T> for Naive {
    const EXTRA_EVALS: usize = 0;

    fn step(&mut self, z: &mut GpuBuffer<T>, fz: &GpuBuffer<T>, active: &[bool]) {
        k::naive_step(z, fz, self.tau, active, self.n);
    }

    fn report(&self, _stats: &mut SolveStats) {}
}

/// Solves on the device of `z0` (a CUDA tensor); `b × n` as in `solve`.
pub(crate) fn solve<T: Float>(
    cfg: &SolverConfig,
    f: impl FnMut(&Tensor<T>) -> Tensor<T>,
    z0: &Tensor<T>,
    b: usize,
    n: usize,
) -> (Tensor<T>, SolveStats) {
    let gpu = z0.gpu().expect("gpu::solve on a cuda tensor").gpu().clone();
    match cfg.kind {
        SolverKind::Naive { tau } => drive(cfg, f, z0, b, n, Naive { n, tau }),
        SolverKind::Anderson { m, lam, beta } => {
            let stepper = anderson::Anderson::new(&gpu, b, n, m, lam, beta, cfg.max_iter);
            drive(cfg, f, z0, b, n, stepper)
        }
        SolverKind::Broyden { memory } => {
            let stepper = broyden::Broyden::new(&gpu, b, n, memory, cfg.max_iter);
            drive(cfg, f, z0, b, n, stepper)
        }
    }
}

/// The loop shared by every method: evaluate, observe (record, freeze), step.
fn drive<T: Float, S: GpuStepper<T>>(
    cfg: &SolverConfig,
    mut f: impl FnMut(&Tensor<T>) -> Tensor<T>,
    z0: &Tensor<T>,
    b: usize,
    n: usize,
    mut stepper: S,
) -> (Tensor<T>, SolveStats) {
    let shape = z0.shape().to_vec();
    let start = if z0.all_finite() {
        z0.clone()
    } else {
        // As on the host: non-finite starting values become 0 (a one-off round trip).
        let host: Vec<T> = z0
            .to_vec()
            .into_iter()
            .map(|v| if v.is_finite() { v } else { T::ZERO })
            .collect();
        Tensor::from_vec(host, &shape)
            .to_device(z0.device())
            .expect("the device of z0 is open")
    };
    let mut z = start.into_gpu();
    let mut best = z.clone();
    let mut tracker = Tracker::new(cfg, b);
    let extra = S::EXTRA_EVALS;
    let max_evals = cfg.max_iter + extra;
    let mut evals = 1;
    let mut fz = eval(&mut f, &mut z, &shape);
    loop {
        let sums = k::residual_sums(&z, &fz, b, n);
        let verdicts = tracker.judge_all(&sums, evals - extra);
        let save: Vec<bool> = verdicts.iter().map(|v| v.save_best).collect();
        k::copy_rows(&mut best, &z, &save, n);
        let restore: Vec<bool> = verdicts.iter().map(|v| v.restore).collect();
        k::copy_rows(&mut z, &best, &restore, n);
        if evals == max_evals || !tracker.any_active() {
            break;
        }
        stepper.step(&mut z, &fz, tracker.active());
        drop(fz);
        fz = eval(&mut f, &mut z, &shape);
        evals += 1;
    }
    drop(fz);
    let mut stats = tracker.finish(evals - extra, evals);
    stepper.report(&mut stats);
    (Tensor::from_gpu(best, &shape), stats)
}

/// One call of `f` at `z` (lent to `f` as a tensor without a copy), checking what it returns.
fn eval<T: Float>(
    f: &mut impl FnMut(&Tensor<T>) -> Tensor<T>,
    z: &mut GpuBuffer<T>,
    shape: &[usize],
) -> GpuBuffer<T> {
    let placeholder = z.gpu().alloc::<T>(0);
    let zt = Tensor::from_gpu(std::mem::replace(z, placeholder), shape);
    let fz = f(&zt);
    *z = zt.into_gpu();
    assert_eq!(
        fz.shape(),
        shape,
        "deq_solvers::solve: f returned shape {:?} for a state of shape {:?}",
        fz.shape(),
        shape
    );
    assert_eq!(
        fz.device(),
        deq_autograd::Device::Cuda(z.gpu().ordinal()),
        "deq_solvers::solve: f returned a tensor on {} for a state on cuda:{}",
        fz.device(),
        z.gpu().ordinal()
    );
    fz.into_gpu()
}
