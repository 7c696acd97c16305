//! Limited-memory good Broyden on the device: the update of `broyden.rs` (same ring, same
//! drop-before-update rule, same skip test), with `u`, `v` as `[b, cap, n]` device histories
//! and the per-sample ring bookkeeping on the host.

use super::GpuStepper;
use crate::stats::SolveStats;
use deq_autograd::Float;
use deq_cuda::ops::solver::{self as k, Rows};
use deq_cuda::{Gpu, GpuBuffer};

/// `|vᵀΔg| ≤ SKIP_RTOL · ‖Δz‖‖Δg‖` skips the update (as on the host).
const SKIP_RTOL: f64 = 1e-14;

#[derive(Clone, Copy, Default)]
struct Ring {
    pairs: usize,
    head: usize,
    skipped: usize,
    pairs_max: usize,
}

pub(crate) struct Broyden<T: Float> {
    n: usize,
    cap: usize,
    u: GpuBuffer<T>,
    v: GpuBuffer<T>,
    g: GpuBuffer<T>,
    d: GpuBuffer<T>,
    dg: GpuBuffer<T>,
    rings: Vec<Ring>,
    started: bool,
}

impl<T: Float> Broyden<T> {
    /// Zeroed histories of `min(memory, max_iter)` pairs for `b` samples of `n` values.
    pub(crate) fn new(gpu: &Gpu, b: usize, n: usize, memory: usize, max_iter: usize) -> Self {
        let cap = crate::broyden::capacity(memory, max_iter);
        Broyden {
            n,
            cap,
            u: gpu.zeros(b * cap * n),
            v: gpu.zeros(b * cap * n),
            g: gpu.zeros(b * n),
            d: gpu.zeros(b * n),
            dg: gpu.zeros(b * n),
            rings: vec![Ring::default(); b],
            started: false,
        }
    }

    /// Adds the pair from `Δz = d`, `Δg = dg` for every active sample whose denominator does
    /// not vanish, dropping the oldest pair first when the ring is full.
    fn update(&mut self, active: &[bool]) {
        let (b, n, cap) = (active.len(), self.n, self.cap);
        let used = self.rings.iter().map(|r| r.pairs).max().unwrap_or(0);
        let c = k::dots(&self.dg, Rows::Plain, &self.v, b, n, cap, used);
        let e = k::dots(&self.d, Rows::Plain, &self.u, b, n, cap, used);
        let d3 = k::dot3(&self.d, &self.dg, b, n);
        let mut cu = vec![0.0; b * cap];
        let mut cv = vec![0.0; b * cap];
        let mut inv = vec![0.0; b];
        let mut slot = vec![None; b];
        for s in (0..b).filter(|&s| active[s]) {
            let r = &mut self.rings[s];
            let head = r.head;
            let kept = |i: &usize| *i != head;
            let (dzdg, dzdz, dgdg) = d3[s];
            let row = s * cap;
            let denom = -dzdg
                + (0..r.pairs)
                    .filter(kept)
                    .map(|i| e[row + i] * c[row + i])
                    .sum::<f64>();
            if !denom.is_finite() || denom.abs() <= SKIP_RTOL * (dzdz * dgdg).sqrt() {
                r.skipped += 1;
                continue;
            }
            slot[s] = Some(head);
            inv[s] = 1.0 / denom;
            for i in (0..r.pairs).filter(kept) {
                cu[row + i] = -c[row + i];
                cv[row + i] = e[row + i];
            }
            r.pairs = (r.pairs + 1).min(cap);
            r.head = (head + 1) % cap;
            r.pairs_max = r.pairs_max.max(r.pairs);
        }
        k::broyden_pair(
            &self.d,
            &self.dg,
            &mut self.u,
            &mut self.v,
            &cu,
            &cv,
            &slot,
            &inv,
            n,
            cap,
        );
    }
}

impl<T: Float> GpuStepper<T> for Broyden<T> {
    const EXTRA_EVALS: usize = 1;

    fn step(&mut self, z: &mut GpuBuffer<T>, fz: &GpuBuffer<T>, active: &[bool]) {
        let (b, n, cap) = (active.len(), self.n, self.cap);
        k::broyden_residual(z, fz, &mut self.g, &mut self.dg, active, self.started, n);
        if self.started {
            self.update(active);
        }
        self.started = true;
        // d = −B g = g − Σ (v_i·g) u_i, then z += d.
        let used = self.rings.iter().map(|r| r.pairs).max().unwrap_or(0);
        let c = k::dots(&self.g, Rows::Plain, &self.v, b, n, cap, used);
        let mut coef = vec![0.0; b * cap];
        for s in (0..b).filter(|&s| active[s]) {
            for i in 0..self.rings[s].pairs {
                coef[s * cap + i] = -c[s * cap + i];
            }
        }
        let ones = vec![1.0; b];
        k::combine(
            &mut self.d,
            Some(&self.g),
            &ones,
            &self.u,
            &coef,
            None,
            active,
            n,
            cap,
        );
        k::axpy_rows(z, &self.d, 1.0, active, n);
    }

    fn report(&self, stats: &mut SolveStats) {
        stats.fallback_steps += self.rings.iter().map(|r| r.skipped).sum::<usize>();
        stats.lowrank_capacity = self.cap;
        stats.lowrank_pairs_max = self.rings.iter().map(|r| r.pairs_max).max().unwrap_or(0);
    }
}
