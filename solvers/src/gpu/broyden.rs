//! Limited-memory good Broyden on the device: the update of `broyden.rs` (same ring, same
//! drop-before-update rule, same skip test), with `u`, `v` as `[b, cap, n]` device histories
//! and the per-sample ring bookkeeping on the host. A step waits for the device once: every
//! dot product it needs goes into one device buffer and comes back in one download, and the
//! host forms the new pair's and the direction's coefficients from those scalars alone
//! ([`plan_sample`]).

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
    /// Zeroed histories of `crate::broyden::capacity` pairs (`min(memory, max_iter − 1)`,
    /// at least 1) for `b` samples of `n` values.
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

    /// Reads every scalar of this step in one download (see [`Scalars`]), plans each active
    /// sample's update on the host ([`plan_sample`]), and writes the new pairs; returns the
    /// direction's coefficients `dir` (`d = g⁺ + Σ dir_i u_i`, `[b, cap]`).
    fn update(&mut self, active: &[bool]) -> Vec<f64> {
        let (b, n, cap) = (active.len(), self.n, self.cap);
        let used = self.rings.iter().map(|r| r.pairs).max().unwrap_or(0);
        let bc = b * cap;
        let mut out = self.u.gpu().zeros::<f64>(3 * bc + 4 * b);
        k::dots_into(&mut out, 0, &self.dg, Rows::Plain, &self.v, b, n, cap, used);
        k::dots_into(&mut out, bc, &self.d, Rows::Plain, &self.u, b, n, cap, used);
        k::dots_into(
            &mut out,
            2 * bc,
            &self.g,
            Rows::Plain,
            &self.v,
            b,
            n,
            cap,
            used,
        );
        k::dot3_into(&mut out, 3 * bc, &self.d, &self.dg, b, n);
        k::dots_into(
            &mut out,
            3 * bc + 3 * b,
            &self.g,
            Rows::Plain,
            &self.d,
            b,
            n,
            1,
            1,
        );
        let all = out.to_vec();
        let (c, rest) = all.split_at(bc);
        let (e, rest) = rest.split_at(bc);
        let (w, rest) = rest.split_at(bc);
        let (d3, dzg) = rest.split_at(3 * b);
        let mut cu = vec![0.0; bc];
        let mut cv = vec![0.0; bc];
        let mut dir = vec![0.0; bc];
        let mut inv = vec![0.0; b];
        let mut slot = vec![None; b];
        for s in (0..b).filter(|&s| active[s]) {
            let row = s * cap..(s + 1) * cap;
            let sc = Scalars {
                c: &c[row.clone()],
                e: &e[row.clone()],
                w: &w[row.clone()],
                dzdg: d3[3 * s],
                dzdz: d3[3 * s + 1],
                dgdg: d3[3 * s + 2],
                dzg: dzg[s],
            };
            let coefs = Coefficients {
                cu: &mut cu[row.clone()],
                cv: &mut cv[row.clone()],
                dir: &mut dir[row],
            };
            if let Some((k, inv_denom)) = plan_sample(&mut self.rings[s], &sc, coefs) {
                slot[s] = Some(k);
                inv[s] = inv_denom;
            }
        }
        if slot.iter().any(Option::is_some) {
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
        dir
    }
}

impl<T: Float> GpuStepper<T> for Broyden<T> {
    const EXTRA_EVALS: usize = 1;

    /// One download per step: the residual kernel, then (after the first step) the
    /// reductions of [`Scalars`] into one buffer, the host's plan, the new pairs, and the
    /// direction `d = g⁺ + Σ dir_i u_i` with `z += d`.
    fn step(&mut self, z: &mut GpuBuffer<T>, fz: &GpuBuffer<T>, active: &[bool]) {
        let (b, n, cap) = (active.len(), self.n, self.cap);
        k::broyden_residual(z, fz, &mut self.g, &mut self.dg, active, self.started, n);
        // The first step is the plain one: d = g, no pair held.
        let dir = if self.started {
            self.update(active)
        } else {
            vec![0.0; b * cap]
        };
        self.started = true;
        let ones = vec![1.0; b];
        k::combine(
            &mut self.d,
            Some(&self.g),
            &ones,
            &self.u,
            &dir,
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

/// One sample's scalars of a step, each a dot product over its `n` values: with `Δz` the last
/// step, `g⁺` the new residual and `Δg = g⁺ − g`, for each slot `i` (0 beyond the pairs held)
/// `c_i = v_i·Δg`, `e_i = u_i·Δz` and `w_i = v_i·g⁺` (the factors before this step's
/// update), and `Δz·Δg`, `Δz·Δz`, `Δg·Δg`, `Δz·g⁺`.
struct Scalars<'a> {
    c: &'a [f64],
    e: &'a [f64],
    w: &'a [f64],
    dzdg: f64,
    dzdz: f64,
    dgdg: f64,
    dzg: f64,
}

/// One sample's coefficient rows (`cap` each), zero on entry: the new pair's `cu`, `cv` for
/// `broyden_pair` and the direction's `dir`.
struct Coefficients<'a> {
    cu: &'a mut [f64],
    cv: &'a mut [f64],
    dir: &'a mut [f64],
}

/// The host's half of a good-Broyden step (the maths of `broyden.rs`), from the scalars
/// alone, so that a step needs one download.
///
/// With `H = −I + Σ_{i≠k} u_i v_iᵀ` (slot `k` = the ring's head, whose pair is dropped when
/// the ring is full) the new pair is `u_k = (Δz + Δg − Σ c_i u_i)/denom`,
/// `v_k = −Δz + Σ e_i v_i`, `denom = −Δz·Δg + Σ e_i c_i` (sums over the held `i ≠ k`), so
/// that `H⁺Δg = Δz`. The direction `d = −H⁺g⁺ = g⁺ − Σ (v_i·g⁺) u_i` needs `v_k·g⁺`, which
/// follows from the scalars without reading the new row: `v_k·g⁺ = −Δz·g⁺ + Σ e_i w_i`.
/// A vanishing denominator skips the update (the held pairs, slot `k` included, give the
/// direction). Returns the slot written and `1/denom`, or `None` when skipped.
fn plan_sample(ring: &mut Ring, sc: &Scalars<'_>, out: Coefficients<'_>) -> Option<(usize, f64)> {
    let cap = out.dir.len();
    debug_assert!(
        [
            sc.c.len(),
            sc.e.len(),
            sc.w.len(),
            out.cu.len(),
            out.cv.len()
        ]
        .iter()
        .all(|&l| l == cap),
        "plan_sample: rows of {cap} slots"
    );
    let head = ring.head;
    let kept = || (0..ring.pairs).filter(move |&i| i != head);
    let denom = -sc.dzdg + kept().map(|i| sc.e[i] * sc.c[i]).sum::<f64>();
    if !denom.is_finite() || denom.abs() <= SKIP_RTOL * (sc.dzdz * sc.dgdg).sqrt() {
        ring.skipped += 1;
        for i in 0..ring.pairs {
            out.dir[i] = -sc.w[i];
        }
        return None;
    }
    let mut wk = -sc.dzg;
    for i in kept() {
        out.cu[i] = -sc.c[i];
        out.cv[i] = sc.e[i];
        wk += sc.e[i] * sc.w[i];
    }
    ring.pairs = (ring.pairs + 1).min(cap);
    ring.head = (head + 1) % cap;
    ring.pairs_max = ring.pairs_max.max(ring.pairs);
    for i in 0..ring.pairs {
        out.dir[i] = if i == head { -wk } else { -sc.w[i] };
    }
    Some((head, 1.0 / denom))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// `−H·x = x − Σ_{i in use} (v_i·x) u_i` over the pairs `use_`.
    fn minus_h(u: &[Vec<f64>], v: &[Vec<f64>], use_: &[usize], x: &[f64]) -> Vec<f64> {
        let mut y = x.to_vec();
        for &i in use_ {
            let c = dot(&v[i], x);
            y.iter_mut().zip(&u[i]).for_each(|(y, u)| *y -= c * u);
        }
        y
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        let scale = b.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * scale)
    }

    /// Applies a plan as the kernels do (`broyden_pair`, then `combine`) in f64.
    #[allow(clippy::too_many_arguments)]
    fn apply_plan(
        u: &mut [Vec<f64>],
        v: &mut [Vec<f64>],
        dz: &[f64],
        dg: &[f64],
        g: &[f64],
        plan: Option<(usize, f64)>,
        cu: &[f64],
        cv: &[f64],
        dir: &[f64],
    ) -> Vec<f64> {
        if let Some((k, inv)) = plan {
            let mut uk: Vec<f64> = dz.iter().zip(dg).map(|(a, b)| a + b).collect();
            let mut vk: Vec<f64> = dz.iter().map(|a| -a).collect();
            for i in 0..u.len() {
                uk.iter_mut().zip(&u[i]).for_each(|(y, x)| *y += cu[i] * x);
                vk.iter_mut().zip(&v[i]).for_each(|(y, x)| *y += cv[i] * x);
            }
            uk.iter_mut().for_each(|y| *y *= inv);
            (u[k], v[k]) = (uk, vk);
        }
        let mut d = g.to_vec();
        for i in 0..u.len() {
            d.iter_mut().zip(&u[i]).for_each(|(y, x)| *y += dir[i] * x);
        }
        d
    }

    proptest! {
        /// The plan from the scalars gives the good-Broyden update: the secant condition
        /// `H⁺Δg = Δz` holds on the pairs in use after it, and the direction is `−H⁺g⁺`
        /// computed from the updated rows (so the `v_k·g⁺` formula is right), for every
        /// ring state (empty, partly filled, full with the oldest pair overwritten).
        #[test]
        fn the_plan_from_the_scalars_is_the_good_broyden_update(
            cap in 1usize..5,
            pairs_seed in 0usize..5,
            head_seed in 0usize..5,
            n in 3usize..12,
            values in proptest::collection::vec(-1.0f64..1.0, (2 * 4 + 3) * 11),
        ) {
            let pairs = pairs_seed % (cap + 1);
            let head = if pairs < cap { pairs } else { head_seed % cap };
            let mut it = values.chunks(n);
            let mut rows = |k: usize| -> Vec<Vec<f64>> {
                (0..k).map(|_| it.next().unwrap().to_vec()).collect()
            };
            let (mut u, mut v) = (rows(cap), rows(cap));
            // Slots not held are zero, as in the device's zeroed histories.
            for i in pairs..cap {
                u[i].iter_mut().for_each(|x| *x = 0.0);
                v[i].iter_mut().for_each(|x| *x = 0.0);
            }
            let state = rows(3);
            let (dz, g_old, g) = (&state[0], &state[1], &state[2]);
            let dg: Vec<f64> = g.iter().zip(g_old).map(|(a, b)| a - b).collect();
            let c: Vec<f64> = v.iter().map(|v| dot(v, &dg)).collect();
            let e: Vec<f64> = u.iter().map(|u| dot(u, dz)).collect();
            let w: Vec<f64> = v.iter().map(|v| dot(v, g)).collect();
            let sc = Scalars {
                c: &c, e: &e, w: &w,
                dzdg: dot(dz, &dg), dzdz: dot(dz, dz), dgdg: dot(&dg, &dg), dzg: dot(dz, g),
            };
            let mut ring = Ring { pairs, head, ..Ring::default() };
            let (mut cu, mut cv, mut dir) = (vec![0.0; cap], vec![0.0; cap], vec![0.0; cap]);
            let plan = plan_sample(
                &mut ring,
                &sc,
                Coefficients { cu: &mut cu, cv: &mut cv, dir: &mut dir },
            );
            let denom = -sc.dzdg
                + (0..pairs).filter(|&i| i != head).map(|i| e[i] * c[i]).sum::<f64>();
            prop_assume!(denom.abs() > 1e-3);
            prop_assert_eq!(plan.map(|p| p.0), Some(head));
            prop_assert_eq!(ring.pairs, (pairs + 1).min(cap));
            prop_assert_eq!(ring.head, (head + 1) % cap);
            let d = apply_plan(&mut u, &mut v, dz, &dg, g, plan, &cu, &cv, &dir);
            let in_use: Vec<usize> = (0..ring.pairs).collect();
            // H⁺Δg = Δz, i.e. −H⁺Δg = −Δz.
            let secant = minus_h(&u, &v, &in_use, &dg);
            let minus_dz: Vec<f64> = dz.iter().map(|x| -x).collect();
            prop_assert!(close(&secant, &minus_dz, 1e-9), "{:?} vs {:?}", secant, minus_dz);
            let want = minus_h(&u, &v, &in_use, g);
            prop_assert!(close(&d, &want, 1e-12), "{:?} vs {:?}", d, want);
        }
    }

    /// A zero step (`Δz = 0`) makes the denominator 0: the update is skipped, counted, and
    /// the direction is `−H·g⁺` with the pairs held, slot `k` included.
    #[test]
    fn a_vanishing_denominator_skips_the_update() {
        let u = vec![vec![0.5, -1.0, 0.25], vec![1.0, 2.0, -0.5]];
        let v = vec![vec![0.1, 0.3, -0.2], vec![-0.4, 0.2, 0.6]];
        let g = [0.3, -0.7, 1.1];
        let dg = [0.2, 0.1, -0.3];
        let c: Vec<f64> = v.iter().map(|v| dot(v, &dg)).collect();
        let w: Vec<f64> = v.iter().map(|v| dot(v, &g)).collect();
        let e = [0.0, 0.0];
        let sc = Scalars {
            c: &c,
            e: &e,
            w: &w,
            dzdg: 0.0,
            dzdz: 0.0,
            dgdg: dot(&dg, &dg),
            dzg: 0.0,
        };
        let mut ring = Ring {
            pairs: 2,
            head: 0,
            ..Ring::default()
        };
        let (mut cu, mut cv, mut dir) = (vec![0.0; 2], vec![0.0; 2], vec![0.0; 2]);
        let plan = plan_sample(
            &mut ring,
            &sc,
            Coefficients {
                cu: &mut cu,
                cv: &mut cv,
                dir: &mut dir,
            },
        );
        assert!(plan.is_none());
        assert_eq!((ring.pairs, ring.head, ring.skipped), (2, 0, 1));
        assert_eq!((cu, cv), (vec![0.0; 2], vec![0.0; 2]));
        let (mut u2, mut v2) = (u.clone(), v.clone());
        let d = apply_plan(&mut u2, &mut v2, &[0.0; 3], &dg, &g, None, &[], &[], &dir);
        let want = minus_h(&u, &v, &[0, 1], &g);
        assert!(close(&d, &want, 1e-15), "{d:?} vs {want:?}");

        // A non-finite denominator on a partly filled ring (one pair of two held): skipped
        // as well, the held pair alone gives the direction, the free slot stays free.
        let sc = Scalars {
            dzdg: f64::NAN,
            ..sc
        };
        let mut ring = Ring {
            pairs: 1,
            head: 1,
            ..Ring::default()
        };
        let mut dir = vec![0.0; 2];
        let plan = plan_sample(
            &mut ring,
            &sc,
            Coefficients {
                cu: &mut [0.0; 2],
                cv: &mut [0.0; 2],
                dir: &mut dir,
            },
        );
        assert!(plan.is_none());
        assert_eq!((ring.pairs, ring.head, ring.skipped), (1, 1, 1));
        assert_eq!(dir, vec![-w[0], 0.0]);
    }
}
