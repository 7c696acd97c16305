//! Per-sample vector kernels shared by the solvers: dot products and norms accumulated in f64,
//! `axpy` in the tensor's own type, blocked multi-vector forms of both, and the rule that
//! decides when a loop over samples goes to rayon.
//!
//! The workspace is compiled for baseline x86-64 (SSE2). Each public kernel checks once per
//! call (a cached atomic load) whether the CPU has AVX2 and then runs the same code compiled
//! with AVX2 enabled, which doubles the vector width of these memory-bound loops.

use deq_autograd::kernels::PAR_MIN;
use deq_autograd::Float;

/// Lanes of independent accumulators: lets the compiler vectorise an f64 reduction whose
/// summation order would otherwise be fixed.
pub(crate) const LANES: usize = 8;

/// Values per block of the multi-vector kernels: the shared operand's block (4–8 KiB) stays in
/// L1 while every other vector streams past it once.
pub(crate) const BLOCK: usize = 1024;

/// How many samples of `n` values one rayon task takes at least, so that a task covers about
/// [`PAR_MIN`] values. Small states (W1: 256 values) then run on the calling thread with no
/// scheduling cost; large ones (W2: 32768 values) get one task per sample.
pub(crate) fn samples_per_task(n: usize) -> usize {
    (PAR_MIN / n.max(1)).max(1)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

/// Runs `$generic(args)`, through its AVX2-compiled twin in [`avx2`] when the CPU has it.
macro_rules! dispatch {
    ($name:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2() {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { avx2::$name($($arg),*) };
            }
        }
        generic::$name($($arg),*)
    }};
}

/// `(‖fz − z‖², ‖fz‖²)` in one pass, accumulated in f64: the two norms behind the absolute
/// and relative residuals.
pub(crate) fn residual_sums<T: Float>(z: &[T], fz: &[T]) -> (f64, f64) {
    dispatch!(residual_sums(z, fz))
}

/// `out[i] = v · x` for every `(i, v)` of `terms`, blocked so that `x` is read from memory
/// once.
pub(crate) fn dots<'a, T, I>(x: &[T], terms: I, out: &mut [f64])
where
    T: Float,
    I: Iterator<Item = (usize, &'a [T])> + Clone,
{
    dispatch!(dots(x, terms, out))
}

/// `y ← y + Σ c·v` over `(c, v)` in `terms`, blocked so that `y` is read and written once.
pub(crate) fn axpys<'a, T, I>(y: &mut [T], terms: I)
where
    T: Float,
    I: Iterator<Item = (f64, &'a [T])> + Clone,
{
    dispatch!(axpys(y, terms))
}

/// The kernels compiled for AVX2: thin `target_feature` wrappers around the inlined generic
/// bodies.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::generic;
    use deq_autograd::Float;

    #[target_feature(enable = "avx,avx2")]
    pub(super) unsafe fn residual_sums<T: Float>(z: &[T], fz: &[T]) -> (f64, f64) {
        generic::residual_sums(z, fz)
    }

    #[target_feature(enable = "avx,avx2")]
    pub(super) unsafe fn dots<'a, T, I>(x: &[T], terms: I, out: &mut [f64])
    where
        T: Float,
        I: Iterator<Item = (usize, &'a [T])> + Clone,
    {
        generic::dots(x, terms, out)
    }

    #[target_feature(enable = "avx,avx2")]
    pub(super) unsafe fn axpys<'a, T, I>(y: &mut [T], terms: I)
    where
        T: Float,
        I: Iterator<Item = (f64, &'a [T])> + Clone,
    {
        generic::axpys(y, terms)
    }
}

/// Portable bodies, always inlined into their callers (and so compiled with the callers'
/// target features).
pub(crate) mod generic {
    use super::{BLOCK, LANES};
    use deq_autograd::Float;

    /// `a·b` in f64 over [`LANES`] independent accumulators.
    #[inline(always)]
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

    #[inline(always)]
    pub(super) fn residual_sums<T: Float>(z: &[T], fz: &[T]) -> (f64, f64) {
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

    #[inline(always)]
    pub(super) fn dots<'a, T, I>(x: &[T], terms: I, out: &mut [f64])
    where
        T: Float,
        I: Iterator<Item = (usize, &'a [T])> + Clone,
    {
        for (i, _) in terms.clone() {
            out[i] = 0.0;
        }
        let n = x.len();
        let mut lo = 0;
        while lo < n {
            let hi = (lo + BLOCK).min(n);
            let xb = &x[lo..hi];
            for (i, v) in terms.clone() {
                out[i] += dot(&v[lo..hi], xb);
            }
            lo = hi;
        }
    }

    #[inline(always)]
    pub(super) fn axpys<'a, T, I>(y: &mut [T], terms: I)
    where
        T: Float,
        I: Iterator<Item = (f64, &'a [T])> + Clone,
    {
        let n = y.len();
        let mut lo = 0;
        while lo < n {
            let hi = (lo + BLOCK).min(n);
            let yb = &mut y[lo..hi];
            for (c, v) in terms.clone() {
                let c = T::from_f64(c);
                yb.iter_mut()
                    .zip(&v[lo..hi])
                    .for_each(|(y, &v)| *y += c * v);
            }
            lo = hi;
        }
    }
}
