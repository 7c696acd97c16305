//! The per-sample bookkeeping every solver shares: residuals of each evaluated iterate, the
//! lowest-residual iterate so far, and the decision to freeze a sample (converged, or
//! stopped by the protective rule).

use crate::config::{SolverConfig, StopMode};
use crate::stats::SolveStats;
use crate::vecops::{residual_sums, samples_per_task};
use deq_autograd::Float;
use rayon::prelude::*;

/// Added to `‖f(z)‖` in the relative residual.
const REL_EPS: f64 = 1e-9;

/// One sample's record.
struct Track {
    /// Residual (in the stop mode) of the best iterate so far; `inf` before the first finite
    /// one.
    best_res: f64,
    /// Absolute residual of the first iterate (reference of the protective stop).
    init_abs: f64,
    lowest_abs: f64,
    lowest_rel: f64,
    iterations: usize,
    converged: bool,
    diverged: bool,
    abs: Vec<f64>,
    rel: Vec<f64>,
}

/// The constants of the freeze rule for one observation.
#[derive(Clone, Copy)]
struct Rule {
    mode: StopMode,
    tol: f64,
    protect: f64,
    early_stop: bool,
    iteration: usize,
}

/// Residual traces and active flags for a batch: the host-side bookkeeping shared by the CPU
/// monitor below and the GPU driver (which keeps its best iterates on the device).
pub(crate) struct Tracker {
    rule: Rule,
    tracks: Vec<Track>,
    active: Vec<bool>,
}

impl Tracker {
    /// Every one of `b` samples active, no residual yet.
    pub(crate) fn new(cfg: &SolverConfig, b: usize) -> Self {
        let cap = cfg.max_iter + 1;
        let tracks = (0..b)
            .map(|_| Track {
                best_res: f64::INFINITY,
                init_abs: f64::NAN,
                lowest_abs: f64::INFINITY,
                lowest_rel: f64::INFINITY,
                iterations: 0,
                converged: false,
                diverged: false,
                abs: Vec::with_capacity(cap),
                rel: Vec::with_capacity(cap),
            })
            .collect();
        Tracker {
            rule: Rule {
                mode: cfg.stop_mode,
                tol: cfg.tol,
                protect: cfg.protect,
                early_stop: cfg.early_stop,
                iteration: 0,
            },
            tracks,
            active: vec![true; b],
        }
    }

    /// Which samples the solver still updates.
    pub(crate) fn active(&self) -> &[bool] {
        &self.active
    }

    /// Some sample is still active.
    pub(crate) fn any_active(&self) -> bool {
        self.active.iter().any(|&a| a)
    }

    /// Judges every active sample from its residual sums `(‖f(z) − z‖², ‖f(z)‖²)` at batch
    /// iteration `iteration`; inactive samples get the default verdict (nothing to do).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn judge_all(&mut self, sums: &[(f64, f64)], iteration: usize) -> Vec<Verdict> {
        let rule = Rule {
            iteration,
            ..self.rule
        };
        self.tracks
            .iter_mut()
            .zip(self.active.iter_mut())
            .zip(sums)
            .map(|((t, active), &sum)| {
                if !*active {
                    return Verdict::default();
                }
                let v = t.judge(rule, sum);
                *active = v.active;
                v
            })
            .collect()
    }

    /// The statistics after `iterations` batch iterations and `f_evals` calls of f.
    pub(crate) fn finish(self, iterations: usize, f_evals: usize) -> SolveStats {
        let b = self.tracks.len();
        let mut stats = SolveStats {
            iterations,
            f_evals,
            f_rows: b * f_evals,
            sample_iterations: Vec::with_capacity(b),
            abs_trace: Vec::with_capacity(b),
            rel_trace: Vec::with_capacity(b),
            lowest_abs: Vec::with_capacity(b),
            lowest_rel: Vec::with_capacity(b),
            converged: Vec::with_capacity(b),
            diverged: Vec::with_capacity(b),
            ..SolveStats::default()
        };
        for (t, active) in self.tracks.into_iter().zip(self.active) {
            stats
                .sample_iterations
                .push(if active { iterations } else { t.iterations });
            stats
                .converged
                .push(t.converged || t.best_res < self.rule.tol);
            stats.diverged.push(t.diverged);
            stats.lowest_abs.push(t.lowest_abs);
            stats.lowest_rel.push(t.lowest_rel);
            stats.abs_trace.push(t.abs);
            stats.rel_trace.push(t.rel);
        }
        stats
    }
}

/// Residual traces, best iterates and active flags for a batch of `b` samples of `n` values
/// on the host.
pub(crate) struct Monitor<T: Float> {
    n: usize,
    tracker: Tracker,
    best: Vec<T>,
}

impl<T: Float> Monitor<T> {
    /// Starts with every sample active and its best iterate set to `z0` (returned as is for a
    /// sample that never has a finite residual).
    pub(crate) fn new(cfg: &SolverConfig, b: usize, n: usize, z0: &[T]) -> Self {
        Monitor {
            n,
            tracker: Tracker::new(cfg, b),
            best: z0.to_vec(),
        }
    }

    /// Which samples the solver still updates.
    pub(crate) fn active(&self) -> &[bool] {
        self.tracker.active()
    }

    /// Some sample is still active.
    pub(crate) fn any_active(&self) -> bool {
        self.tracker.any_active()
    }

    /// Records the residual of every active sample's iterate `z` given `fz = f(z)` at batch
    /// iteration `iteration`, keeps its best iterate, and freezes it when it converged or
    /// diverged. A diverged sample's `z` is reset to its best iterate, so later calls of `f`
    /// see finite values.
    pub(crate) fn observe(&mut self, z: &mut [T], fz: &[T], iteration: usize) {
        let n = self.n;
        let rule = Rule {
            iteration,
            ..self.tracker.rule
        };
        (
            self.best.par_chunks_mut(n),
            z.par_chunks_mut(n),
            fz.par_chunks(n),
            self.tracker.tracks.par_iter_mut(),
            self.tracker.active.par_iter_mut(),
        )
            .into_par_iter()
            .with_min_len(samples_per_task(n))
            .for_each(|(best, z, fz, track, active)| {
                if *active {
                    *active = observe_sample(rule, best, z, fz, track);
                }
            });
    }

    /// The best iterate of every sample (row-major, `b × n`) and the statistics.
    pub(crate) fn finish(self, iterations: usize, f_evals: usize) -> (Vec<T>, SolveStats) {
        (self.best, self.tracker.finish(iterations, f_evals))
    }
}

/// What one observation decided for a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The sample stays active.
    pub(crate) active: bool,
    /// `z` is the best iterate so far: copy it to `best`.
    pub(crate) save_best: bool,
    /// The sample stopped on a bad iterate: copy `best` back into `z`.
    pub(crate) restore: bool,
}

impl Track {
    /// Records one residual `(‖f(z) − z‖², ‖f(z)‖²)` and decides: keep going, keep `z` as
    /// the best iterate, freeze (converged), or freeze and restore the best (diverged).
    fn judge(&mut self, rule: Rule, (d2, f2): (f64, f64)) -> Verdict {
        let abs = d2.sqrt();
        let rel = abs / (f2.sqrt() + REL_EPS);
        // Capacity is max_iter + 1 and a sample is observed at most that often: never
        // reallocates.
        debug_assert!(self.abs.len() < self.abs.capacity());
        self.abs.push(abs);
        self.rel.push(rel);
        self.iterations = rule.iteration;
        let stop_and_restore = Verdict {
            active: false,
            save_best: false,
            restore: true,
        };
        if !(abs.is_finite() && rel.is_finite()) {
            // f(z) overflowed or produced NaN: back to the lowest finite iterate.
            self.diverged = true;
            return stop_and_restore;
        }
        if self.abs.len() == 1 {
            self.init_abs = abs;
        }
        self.lowest_abs = self.lowest_abs.min(abs);
        self.lowest_rel = self.lowest_rel.min(rel);
        let res = match rule.mode {
            StopMode::Abs => abs,
            StopMode::Rel => rel,
        };
        let save_best = res < self.best_res;
        if save_best {
            self.best_res = res;
        }
        if rule.early_stop && res < rule.tol {
            // `res` is the first value below tol, hence the lowest: `best` equals `z`.
            self.converged = true;
            return Verdict {
                active: false,
                save_best,
                restore: false,
            };
        }
        if self.init_abs > 0.0 && abs > rule.protect * self.init_abs {
            self.diverged = true;
            return Verdict {
                save_best,
                ..stop_and_restore
            };
        }
        Verdict {
            active: true,
            save_best,
            restore: false,
        }
    }
}

/// One sample's observation on the host; returns whether it stays active.
fn observe_sample<T: Float>(
    rule: Rule,
    best: &mut [T],
    z: &mut [T],
    fz: &[T],
    t: &mut Track,
) -> bool {
    let v = t.judge(rule, residual_sums(z, fz));
    if v.save_best {
        best.copy_from_slice(z);
    }
    if v.restore {
        z.copy_from_slice(best);
    }
    v.active
}
