//! Anderson acceleration (type II) with per-sample history, an incrementally updated Gram
//! matrix, and a plain-step fallback for singular systems.
//!
//! Per sample, with iterates `X_i` and residuals `G_i = f(X_i) − X_i` in a ring of `m` slots
//! (REFERENCE 2(b)):
//! - `X_0 = z_0`, `X_1 = f(X_0)` (the first step is plain);
//! - for `k ≥ 1`, with the last `n = min(k + 1, m)` pairs: weights `α` from the bordered
//!   system (see `bordered.rs`), then `X_{k+1} = Σ α_i X_i + β Σ α_i G_i`
//!   (`= β Σ α_i f(X_i) + (1 − β) Σ α_i X_i`).
//!
//! Only the new row and column of `G Gᵀ` are computed each iteration (`n` dot products of
//! length `N`), so the cost per iteration is `O(m·N)` plus an `(m+1)³` solve. A singular or
//! non-finite system gives the plain damped step `X_{k+1} = X_k + β G_k` (counted in
//! `SolveStats::fallback_steps`).

use crate::bordered::Bordered;
use crate::stats::SolveStats;
use crate::step::Stepper;
use crate::vecops::{axpys, dots, samples_per_task};
use deq_autograd::pool::PooledVec;
use deq_autograd::Float;
use rayon::prelude::*;

/// One sample's history.
struct Sample<T: Float> {
    /// Iterates `X_i`, `slots × n`.
    x: PooledVec<T>,
    /// Residuals `G_i`, `slots × n`.
    g: PooledVec<T>,
    /// `G_i · G_j`, `slots × slots`, row-major.
    gram: Vec<f64>,
    /// Pairs written so far (the next goes to slot `seen % slots`).
    seen: usize,
    sys: Bordered,
    fallbacks: usize,
}

/// Anderson state for a batch.
pub(crate) struct Anderson<T: Float> {
    n: usize,
    slots: usize,
    lam: f64,
    beta: f64,
    samples: Vec<Sample<T>>,
}

impl<T: Float> Anderson<T> {
    /// History for `b` samples of `n` values: `min(m, max_iter)` slots each, allocated now.
    pub(crate) fn new(b: usize, n: usize, m: usize, lam: f64, beta: f64, max_iter: usize) -> Self {
        let slots = m.min(max_iter).max(1);
        let samples = (0..b)
            .map(|_| Sample {
                x: PooledVec::zeroed(slots * n),
                g: PooledVec::zeroed(slots * n),
                gram: vec![0.0; slots * slots],
                seen: 0,
                sys: Bordered::new(slots),
                fallbacks: 0,
            })
            .collect();
        Anderson {
            n,
            slots,
            lam,
            beta,
            samples,
        }
    }
}

impl<T: Float> Stepper<T> for Anderson<T> {
    const EXTRA_EVALS: usize = 0;

    fn step(&mut self, z: &mut [T], fz: &[T], active: &[bool]) {
        let (n, slots, lam, beta) = (self.n, self.slots, self.lam, self.beta);
        (
            z.par_chunks_mut(n),
            fz.par_chunks(n),
            self.samples.par_iter_mut(),
            active.par_iter(),
        )
            .into_par_iter()
            .with_min_len(samples_per_task(n))
            .for_each(|(z, fz, s, &active)| {
                if active {
                    step_sample(s, z, fz, n, slots, lam, beta);
                }
            });
    }

    fn report(&self, stats: &mut SolveStats) {
        stats.fallback_steps += self.samples.iter().map(|s| s.fallbacks).sum::<usize>();
    }
}

/// Records `(z, f(z) − z)` in the next slot, updates the Gram matrix's row and column of that
/// slot, and writes the mixed iterate into `z`.
fn step_sample<T: Float>(
    s: &mut Sample<T>,
    z: &mut [T],
    fz: &[T],
    n: usize,
    slots: usize,
    lam: f64,
    beta: f64,
) {
    let k = s.seen % slots;
    s.x[k * n..(k + 1) * n].copy_from_slice(z);
    s.g[k * n..(k + 1) * n]
        .iter_mut()
        .zip(fz.iter().zip(z.iter()))
        .for_each(|(g, (&f, &x))| *g = f - x);
    s.seen += 1;
    let used = s.seen.min(slots);
    let g = &s.g;
    let slot = |j: usize| &g[j * n..(j + 1) * n];
    // Row and column k of G Gᵀ: G_j · G_k for every held j (j = k included).
    let row = &mut s.gram[k * slots..(k + 1) * slots];
    dots(slot(k), (0..used).map(|j| (j, slot(j))), row);
    for j in 0..used {
        s.gram[j * slots + k] = s.gram[k * slots + j];
    }
    if s.seen == 1 {
        // X_1 = f(X_0).
        z.copy_from_slice(fz);
        return;
    }
    match s.sys.weights(&s.gram, slots, used, lam) {
        Some(alpha) => {
            // z = Σ α_i X_i + β Σ α_i G_i.
            z.fill(T::ZERO);
            let (x, g) = (&s.x, &s.g);
            let xs = alpha
                .iter()
                .enumerate()
                .map(|(i, &a)| (a, &x[i * n..(i + 1) * n]));
            let gs = alpha
                .iter()
                .enumerate()
                .map(|(i, &a)| (a * beta, &g[i * n..(i + 1) * n]));
            axpys(z, xs.chain(gs));
        }
        None => {
            // z still holds X_k.
            s.fallbacks += 1;
            axpys(z, std::iter::once((beta, &s.g[k * n..(k + 1) * n])));
        }
    }
}
