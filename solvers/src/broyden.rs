//! Limited-memory "good" Broyden in inverse form, per sample, with a ring of at most
//! `memory` low-rank pairs.
//!
//! For the residual `g(z) = f(z) − z` each sample keeps an estimate of the inverse Jacobian
//! `B ≈ J_g⁻¹ = −I + Σ_i u_i v_iᵀ` (REFERENCE 2(a)). Starting from `B_0 = −I`:
//! - direction `d = −B g = g − Σ_i (v_i·g) u_i`, step `z⁺ = z + d` (the first step is the
//!   plain iteration `z + g = f(z)`);
//! - with `Δz = d` and `Δg = g(z⁺) − g(z)`, the Sherman–Morrison form of Broyden's first
//!   method: `vᵀ = Δzᵀ B`, `u = (Δz − B Δg) / (vᵀ Δg)`, `B ← B + u vᵀ`, which makes
//!   `B Δg = Δz` (the secant condition).
//!
//! Expanded with `c_i = v_i·Δg`, `e_i = u_i·Δz`:
//! `v = −Δz + Σ e_i v_i`, `Δz − BΔg = Δz + Δg − Σ c_i u_i`, `vᵀΔg = −Δz·Δg + Σ e_i c_i`.
//! The denominator therefore comes from the dot products alone, before anything is written;
//! when it vanishes (relative to `‖Δz‖‖Δg‖`) or is not finite the update is skipped. The new
//! pair goes to the ring slot after the newest. Once `memory` pairs are held that slot holds
//! the oldest pair, which is dropped *before* the update is computed (left out of every sum),
//! so the truncated estimate still satisfies the latest secant condition exactly; computing
//! the update with the oldest pair and dropping it afterwards breaks that condition and made
//! `memory = 5` diverge on the acceptance problem. Storage is `2 · min(memory, max_iter − 1) · N`
//! values per sample (the first iteration adds no pair).
//!
//! Without a line search (the reference has none either) the iteration can oscillate and then
//! diverge where plain iteration converges. A sample whose residual `‖g‖` grows past
//! [`RESTART_GROWTH`] times its lowest since the last (re)start therefore drops every pair and
//! takes the plain step `z ← f(z)` from where it is; the solver's monitor still returns the
//! lowest-residual iterate, so the result is never worse than the best iterate before a
//! restart.

use crate::broyden_step::{self, Factors, Update};
use crate::stats::SolveStats;
use crate::step::Stepper;
use crate::vecops::samples_per_task;
use deq_autograd::pool::PooledVec;
use deq_autograd::Float;
use rayon::prelude::*;

/// A sample restarts its estimate when `‖g‖` exceeds this many times its lowest `‖g‖` since
/// the last (re)start: healthy solves of DEQ cells spike by one or two orders of magnitude at
/// most; a thousandfold growth is the start of a divergence.
pub const RESTART_GROWTH: f64 = 1e3;

/// One sample's estimate and work vectors.
struct Sample<T: Float> {
    /// `u_i`, `cap × n`.
    u: PooledVec<T>,
    /// `v_i`, `cap × n`.
    v: PooledVec<T>,
    /// Residual at the current iterate.
    g: PooledVec<T>,
    /// Last step `Δz`.
    d: PooledVec<T>,
    /// `Δg`.
    dg: PooledVec<T>,
    /// Scratch row for a candidate `v_k`, allocated when the ring first fills.
    vnew: PooledVec<T>,
    /// `v_i · Δg`, then `v_i · g` (direction coefficients).
    c: Vec<f64>,
    /// `u_i · Δz`.
    e: Vec<f64>,
    /// `v_i · g` (direction coefficients).
    w: Vec<f64>,
    /// Pairs held.
    pairs: usize,
    /// Slot of the next pair.
    head: usize,
    /// A step has been taken (so `Δz`, `Δg` exist).
    started: bool,
    skipped: usize,
    pairs_max: usize,
    /// Lowest `‖g‖²` since the last (re)start.
    best_gg: f64,
    restarts: usize,
}

/// Pairs a sample can ever hold: `memory`, or fewer when `max_iter` iterations cannot add
/// that many. The first iteration is the plain step and adds no pair, so `max_iter`
/// iterations add at most `max_iter − 1` (at W2's 16 iterations a 16th slot would be 2 MiB of
/// zeros per batch of 8 × 32768 values, per factor). At least one slot, so the ring's
/// arithmetic never divides by zero.
pub(crate) fn capacity(memory: usize, max_iter: usize) -> usize {
    memory.min(max_iter.saturating_sub(1)).max(1)
}

/// Broyden state for a batch.
pub(crate) struct Broyden<T: Float> {
    n: usize,
    cap: usize,
    samples: Vec<Sample<T>>,
}

impl<T: Float> Broyden<T> {
    /// Factors for `b` samples of `n` values: [`capacity`] pairs each, allocated now and not
    /// cleared (at W2's size that was 31 MiB of zeros per solve). Nothing is read before it
    /// is written: the first step writes `g` and `d`; every step writes `Δg` before reading
    /// it; the pair of slot `k` is written whole before a sum reads it, and sums read only
    /// the slots of held pairs (a restart drops them all).
    pub(crate) fn new(b: usize, n: usize, memory: usize, max_iter: usize) -> Self {
        let cap = capacity(memory, max_iter);
        let samples = (0..b)
            .map(|_| Sample {
                u: PooledVec::unspecified(cap * n),
                v: PooledVec::unspecified(cap * n),
                g: PooledVec::unspecified(n),
                d: PooledVec::unspecified(n),
                dg: PooledVec::unspecified(n),
                vnew: PooledVec::new(Vec::new()),
                c: vec![0.0; cap],
                e: vec![0.0; cap],
                w: vec![0.0; cap],
                pairs: 0,
                head: 0,
                started: false,
                skipped: 0,
                pairs_max: 0,
                best_gg: f64::INFINITY,
                restarts: 0,
            })
            .collect();
        Broyden { n, cap, samples }
    }
}

impl<T: Float> Stepper<T> for Broyden<T> {
    const EXTRA_EVALS: usize = 1;

    fn step(&mut self, z: &mut [T], fz: &[T], active: &[bool]) {
        let (n, cap) = (self.n, self.cap);
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
                    step_sample(s, z, fz, n, cap);
                }
            });
    }

    fn report(&self, stats: &mut SolveStats) {
        let n = self.n.max(1);
        stats.fallback_steps += self.samples.iter().map(|s| s.skipped).sum::<usize>();
        stats.restarts += self.samples.iter().map(|s| s.restarts).sum::<usize>();
        stats.lowrank_capacity = self
            .samples
            .iter()
            .map(|s| s.u.len() / n)
            .max()
            .unwrap_or(0);
        stats.lowrank_pairs_max = self.samples.iter().map(|s| s.pairs_max).max().unwrap_or(0);
    }
}

/// Updates the estimate with the last step (if any), then steps `z ← z − B g(z)`: the
/// fused passes of [`crate::broyden_step`].
fn step_sample<T: Float>(s: &mut Sample<T>, z: &mut [T], fz: &[T], n: usize, cap: usize) {
    if !s.started {
        // The first step is the plain iteration: d = g = f(z) − z, z ← f(z).
        let mut gg = 0.0;
        for (j, (z, &f)) in z.iter_mut().zip(fz).enumerate() {
            let g = f - *z;
            s.g[j] = g;
            s.d[j] = g;
            *z = f;
            gg += g.to_f64() * g.to_f64();
        }
        s.best_gg = gg;
        s.started = true;
        return;
    }
    let k = s.head;
    if k < s.pairs && s.vnew.len() != n {
        s.vnew = PooledVec::unspecified(n);
    }
    let factors = Factors {
        u: &mut s.u,
        v: &mut s.v,
        g: &mut s.g,
        d: &mut s.d,
        dg: &mut s.dg,
        vnew: &mut s.vnew,
        c: &mut s.c,
        e: &mut s.e,
        w: &mut s.w,
    };
    let restart_above = s.best_gg * RESTART_GROWTH * RESTART_GROWTH;
    let (update, gg) = broyden_step::step(factors, z, fz, n, (s.pairs, k), restart_above);
    s.best_gg = s.best_gg.min(gg);
    match update {
        Update::Added => {
            s.pairs = (s.pairs + 1).min(cap);
            s.head = (k + 1) % cap;
            s.pairs_max = s.pairs_max.max(s.pairs);
        }
        Update::Skipped => s.skipped += 1,
        Update::Restart => {
            (s.pairs, s.head, s.best_gg) = (0, 0, gg);
            s.restarts += 1;
        }
    }
}
