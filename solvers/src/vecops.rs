//! Per-sample vector kernels shared by the solvers: dot products and norms accumulated in f64,
//! `axpy` in the tensor's own type, and the rule that decides when a loop over samples goes to
//! rayon.

use deq_autograd::kernels::PAR_MIN;
use deq_autograd::Float;

/// Lanes of independent accumulators: lets the compiler vectorise an f64 reduction whose
/// summation order would otherwise be fixed.
const LANES: usize = 8;

/// How many samples of `n` values one rayon task takes at least, so that a task covers about
/// [`PAR_MIN`] values. Small states (W1: 256 values) then run on the calling thread with no
/// scheduling cost; large ones (W2: 32768 values) get one task per sample.
pub(crate) fn samples_per_task(n: usize) -> usize {
    (PAR_MIN / n.max(1)).max(1)
}

/// `Σ a_i b_i`, accumulated in f64.
pub(crate) fn dot<T: Float>(a: &[T], b: &[T]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x.to_f64() * y.to_f64())
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l].to_f64() * y[l].to_f64();
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `(‖fz − z‖², ‖fz‖²)` in one pass, accumulated in f64: the two norms behind the absolute
/// and relative residuals.
pub(crate) fn residual_sums<T: Float>(z: &[T], fz: &[T]) -> (f64, f64) {
    debug_assert_eq!(z.len(), fz.len());
    let mut d2 = [0.0f64; LANES];
    let mut f2 = [0.0f64; LANES];
    let (cz, cf) = (z.chunks_exact(LANES), fz.chunks_exact(LANES));
    let (mut td, mut tf) = (0.0f64, 0.0f64);
    for (x, y) in cz.remainder().iter().zip(cf.remainder()) {
        let (x, y) = (x.to_f64(), y.to_f64());
        td += (y - x) * (y - x);
        tf += y * y;
    }
    for (x, y) in cz.zip(cf) {
        for l in 0..LANES {
            let (x, y) = (x[l].to_f64(), y[l].to_f64());
            d2[l] += (y - x) * (y - x);
            f2[l] += y * y;
        }
    }
    (d2.iter().sum::<f64>() + td, f2.iter().sum::<f64>() + tf)
}

/// `y ← y + a·x`.
pub(crate) fn axpy<T: Float>(y: &mut [T], a: f64, x: &[T]) {
    debug_assert_eq!(x.len(), y.len());
    let a = T::from_f64(a);
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}

/// `y ← a·y`.
pub(crate) fn scale<T: Float>(y: &mut [T], a: f64) {
    let a = T::from_f64(a);
    y.iter_mut().for_each(|y| *y *= a);
}

/// Slot `s` of a buffer of `len`-long slots, mutable, with the slots before and after it
/// (read-only), so an update can read every other slot while it writes one.
pub(crate) fn split_slot<T>(buf: &mut [T], len: usize, s: usize) -> (&[T], &mut [T], &[T]) {
    let (before, rest) = buf.split_at_mut(s * len);
    let (slot, after) = rest.split_at_mut(len);
    (before, slot, after)
}
