//! Damped fixed-point iteration.

use crate::stats::SolveStats;
use crate::step::Stepper;
use crate::vecops::samples_per_task;
use deq_autograd::Float;
use rayon::prelude::*;

/// `z ← τ·f(z) + (1 − τ)·z` per active sample. With `τ = 1` it is a copy of `f(z)`.
pub(crate) struct Naive {
    n: usize,
    tau: f64,
}

impl Naive {
    /// State for samples of `n` values with damping `tau ∈ (0, 1]`.
    pub(crate) fn new(n: usize, tau: f64) -> Self {
        Naive { n, tau }
    }
}

impl<T: Float> Stepper<T> for Naive {
    const EXTRA_EVALS: usize = 0;

    fn step(&mut self, z: &mut [T], fz: &[T], active: &[bool]) {
        let n = self.n;
        let (tau, keep) = (T::from_f64(self.tau), T::from_f64(1.0 - self.tau));
        let plain = self.tau == 1.0;
        (z.par_chunks_mut(n), fz.par_chunks(n), active.par_iter())
            .into_par_iter()
            .with_min_len(samples_per_task(n))
            .for_each(|(z, fz, &active)| {
                if !active {
                } else if plain {
                    z.copy_from_slice(fz);
                } else {
                    z.iter_mut()
                        .zip(fz)
                        .for_each(|(z, &f)| *z = tau * f + keep * *z);
                }
            });
    }

    fn report(&self, _stats: &mut SolveStats) {}
}
