//! The seam between the shared driver ([`crate::solve()`]) and one method's update rule.

use crate::stats::SolveStats;
use deq_autograd::Float;

/// One fixed-point method's state and update, over a batch viewed as `b × n` values.
pub(crate) trait Stepper<T: Float> {
    /// f calls made before the first iteration: 0 for naive and Anderson, whose k-th iteration
    /// evaluates `f` at the k-th iterate; 1 for Broyden, which evaluates the initial residual
    /// and then makes one call per iteration.
    const EXTRA_EVALS: usize;

    /// Overwrites every active sample of `z` with its next iterate, given `fz = f(z)`.
    /// Inactive (frozen) samples are neither read nor written.
    fn step(&mut self, z: &mut [T], fz: &[T], active: &[bool]);

    /// Adds the method's own counters to `stats`.
    fn report(&self, stats: &mut SolveStats);
}
