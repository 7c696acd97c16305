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
//! `memory = 5` diverge on the acceptance problem. Storage is `2 · min(memory, max_iter) · N`
//! values per sample.

use crate::stats::SolveStats;
use crate::step::Stepper;
use crate::vecops::{axpys, dot3, dots, other_slot, samples_per_task, scale, split_slot};
use deq_autograd::pool::PooledVec;
use deq_autograd::Float;
use rayon::prelude::*;

/// `|vᵀΔg| ≤ SKIP_RTOL · ‖Δz‖‖Δg‖` skips the update.
const SKIP_RTOL: f64 = 1e-14;

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
    /// `v_i · Δg`, then `v_i · g` (direction coefficients).
    c: Vec<f64>,
    /// `u_i · Δz`.
    e: Vec<f64>,
    /// Pairs held.
    pairs: usize,
    /// Slot of the next pair.
    head: usize,
    /// A step has been taken (so `Δz`, `Δg` exist).
    started: bool,
    skipped: usize,
    pairs_max: usize,
}

/// Broyden state for a batch.
pub(crate) struct Broyden<T: Float> {
    n: usize,
    cap: usize,
    samples: Vec<Sample<T>>,
}

impl<T: Float> Broyden<T> {
    /// Factors for `b` samples of `n` values: `min(memory, max_iter)` pairs each, allocated
    /// now.
    pub(crate) fn new(b: usize, n: usize, memory: usize, max_iter: usize) -> Self {
        let cap = memory.min(max_iter).max(1);
        let samples = (0..b)
            .map(|_| Sample {
                u: PooledVec::zeroed(cap * n),
                v: PooledVec::zeroed(cap * n),
                g: PooledVec::zeroed(n),
                d: PooledVec::zeroed(n),
                dg: PooledVec::zeroed(n),
                c: vec![0.0; cap],
                e: vec![0.0; cap],
                pairs: 0,
                head: 0,
                started: false,
                skipped: 0,
                pairs_max: 0,
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
        stats.lowrank_capacity = self
            .samples
            .iter()
            .map(|s| s.u.len() / n)
            .max()
            .unwrap_or(0);
        stats.lowrank_pairs_max = self.samples.iter().map(|s| s.pairs_max).max().unwrap_or(0);
    }
}

/// Updates the estimate with the last step (if any), then steps `z ← z − B g(z)`.
fn step_sample<T: Float>(s: &mut Sample<T>, z: &mut [T], fz: &[T], n: usize, cap: usize) {
    if s.started {
        // Δg = g(z) − g_prev; g ← g(z).
        for ((dg, g), (&f, &x)) in
            s.dg.iter_mut()
                .zip(s.g.iter_mut())
                .zip(fz.iter().zip(z.iter()))
        {
            let gn = f - x;
            *dg = gn - *g;
            *g = gn;
        }
        update(s, n, cap);
    } else {
        s.g.iter_mut()
            .zip(fz.iter().zip(z.iter()))
            .for_each(|(g, (&f, &x))| *g = f - x);
        s.started = true;
    }
    // d = −B g = g − Σ (v_i·g) u_i.
    let held = s.pairs;
    dots(
        &s.g,
        (0..held).map(|i| (i, &s.v[i * n..(i + 1) * n])),
        &mut s.c,
    );
    s.d.copy_from_slice(&s.g);
    let (c, u) = (&s.c, &s.u);
    axpys(&mut s.d, (0..held).map(|i| (-c[i], &u[i * n..(i + 1) * n])));
    z.iter_mut().zip(&s.d).for_each(|(z, &d)| *z += d);
}

/// Adds the pair `(u, v)` from `Δz = s.d`, `Δg = s.dg`, unless `vᵀΔg` vanishes. When the
/// ring is full the oldest pair is dropped first (its slot `k` is left out of every sum), so
/// the new estimate satisfies the latest secant condition `B Δg = Δz` exactly.
fn update<T: Float>(s: &mut Sample<T>, n: usize, cap: usize) {
    let k = s.head;
    let held = s.pairs;
    let kept = move |i: &usize| *i != k;
    {
        let (u, v) = (&s.u, &s.v);
        // c_i = v_i·Δg, e_i = u_i·Δz.
        dots(&s.dg, slots_except(v, n, held, k), &mut s.c);
        dots(&s.d, slots_except(u, n, held, k), &mut s.e);
    }
    let (dzdg, dzdz, dgdg) = dot3(&s.d, &s.dg);
    let denom = -dzdg + (0..held).filter(kept).map(|i| s.e[i] * s.c[i]).sum::<f64>();
    if !denom.is_finite() || denom.abs() <= SKIP_RTOL * (dzdz * dgdg).sqrt() {
        s.skipped += 1;
        return;
    }
    {
        // u_k = (Δz + Δg − Σ c_i u_i) / denom.
        let (before, uk, after) = split_slot(&mut s.u, n, k);
        uk.iter_mut()
            .zip(s.d.iter().zip(&s.dg))
            .for_each(|(u, (&d, &dg))| *u = d + dg);
        let c = &s.c;
        let others = (0..held)
            .filter(kept)
            .map(|i| (-c[i], other_slot(before, after, n, k, i)));
        axpys(uk, others);
        scale(uk, 1.0 / denom);
    }
    {
        // v_k = −Δz + Σ e_i v_i.
        let (before, vk, after) = split_slot(&mut s.v, n, k);
        vk.iter_mut().zip(&s.d).for_each(|(v, &d)| *v = -d);
        let e = &s.e;
        let others = (0..held)
            .filter(kept)
            .map(|i| (e[i], other_slot(before, after, n, k, i)));
        axpys(vk, others);
    }
    s.pairs = (held + 1).min(cap);
    s.head = (k + 1) % cap;
    s.pairs_max = s.pairs_max.max(s.pairs);
}

/// `(i, slot i)` of a buffer of `n`-long slots, for `i < held`, `i ≠ k`.
fn slots_except<T>(
    buf: &[T],
    n: usize,
    held: usize,
    k: usize,
) -> impl Iterator<Item = (usize, &[T])> + Clone {
    (0..held)
        .filter(move |&i| i != k)
        .map(move |i| (i, &buf[i * n..(i + 1) * n]))
}
