//! One Broyden iteration of one sample in one pass over each low-rank factor.
//!
//! With `m` pairs held, the update and the next direction read the factors `U` and `V`
//! (`m × n` each) and the state vectors. Done term by term ([`crate::broyden`]'s maths:
//! `c = V·Δg`, `e = U·Δz`, `u_k`, `v_k`, then `V·g` and the direction), that is three passes
//! over each factor: at W2's size (8 samples of 32768 values, 16 pairs) 96 MiB of reads per
//! iteration, memory-bound. Here each factor is read once per iteration:
//!
//! - over `V` and the state: `g⁺ = f(z) − z`, `Δg = g⁺ − g`; `c_i = v_i·Δg` (`i ≠ k`),
//!   `w_i = v_i·g⁺` (every held `i`), `Δz·Δg`, `Δz·Δz`, `Δg·Δg`, and the new
//!   `v_k = −Δz + Σ e_i v_i` (into a scratch row) with `w_k = v_k·g⁺`; then the denominator
//!   `−Δz·Δg + Σ e_i c_i` decides whether the pair is added (the scratch row copied into
//!   slot `k`);
//! - over `U`: `u_k = (Δz + Δg − Σ c_i u_i)/denom`, the direction `d = g⁺ − Σ w_i u_i`,
//!   `z ← z + d`, and already the next iteration's `e_i = u_i·d` (block by block, the rows'
//!   blocks still in cache).
//!
//! `e = U·Δz` of the current step is therefore computed by the previous iteration's pass
//! (and is empty at the first update, when no pair is held). `k` is the ring slot of the new
//! pair (the oldest pair when the ring is full, left out of every sum so the secant condition
//! holds, see [`crate::broyden`]). When the denominator vanishes the update is skipped and
//! the held pairs are used as they are. Dot products accumulate in f64 over [`LANES`]
//! independent lanes; blocks of [`BLOCK`] values keep the state vectors' blocks in L1 while
//! the factors stream past.

use crate::vecops::generic::dot as lane_dot;
use crate::vecops::{BLOCK, LANES};
use deq_autograd::Float;
use smallvec::SmallVec;

/// Ring slots, on the stack for rings of up to 32 pairs.
type Slots = SmallVec<[usize; 32]>;

/// `|vᵀΔg| ≤ SKIP_RTOL · ‖Δz‖‖Δg‖` skips the update.
pub(crate) const SKIP_RTOL: f64 = 1e-14;

/// One sample's factors and state, borrowed for a step.
pub(crate) struct Factors<'a, T> {
    /// `cap × n` rows `u_i`.
    pub u: &'a mut [T],
    /// `cap × n` rows `v_i`.
    pub v: &'a mut [T],
    /// Residual at the current iterate (updated to the new one).
    pub g: &'a mut [T],
    /// Last step `Δz` (updated to the new step).
    pub d: &'a mut [T],
    /// `Δg` scratch.
    pub dg: &'a mut [T],
    /// Scratch row for the new `v_k` when slot `k` still holds a pair (a full ring); empty
    /// otherwise (the new row is written into the free slot directly).
    pub vnew: &'a mut [T],
    /// Per-slot scratch `c_i = v_i·Δg`.
    pub c: &'a mut [f64],
    /// `e_i = u_i·Δz` for the current `Δz` (from the previous step), replaced by the next
    /// step's.
    pub e: &'a mut [f64],
    /// Per-slot scratch `w_i = v_i·g⁺`.
    pub w: &'a mut [f64],
}

/// The outcome of a step: whether a pair was added, or the estimate is to be restarted (the
/// step taken was the plain one, `z ← f(z)`).
pub(crate) enum Update {
    Added,
    Skipped,
    Restart,
}

/// `(a·b, c·b)` over one read of `b`.
#[inline(always)]
fn lane_dot2<T: Float>(a: &[T], c: &[T], b: &[T]) -> (f64, f64) {
    debug_assert!(a.len() == b.len() && c.len() == b.len());
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    // Exact chunks of all three (not indices into them): no bounds checks in the loop, so
    // the conversions and products vectorise.
    let (ca, cc, cb) = (
        a.chunks_exact(LANES),
        c.chunks_exact(LANES),
        b.chunks_exact(LANES),
    );
    let (ta, tc, tb) = (ca.remainder(), cc.remainder(), cb.remainder());
    for ((a, c), b) in ca.zip(cc).zip(cb) {
        for l in 0..LANES {
            let bv = b[l].to_f64();
            s1[l] += a[l].to_f64() * bv;
            s2[l] += c[l].to_f64() * bv;
        }
    }
    let (mut t1, mut t2) = (s1.iter().sum::<f64>(), s2.iter().sum::<f64>());
    for ((a, c), b) in ta.iter().zip(tc).zip(tb) {
        let bv = b.to_f64();
        t1 += a.to_f64() * bv;
        t2 += c.to_f64() * bv;
    }
    (t1, t2)
}

/// `y += Σ coef_i · row_i` over the slots `i` of `rows` listed by `slots`.
#[inline(always)]
fn axpy_rows<T: Float>(y: &mut [T], rows: &[T], n: usize, lo: usize, slots: &[(usize, T)]) {
    for &(i, c) in slots {
        let r = &rows[i * n + lo..i * n + lo + y.len()];
        y.iter_mut().zip(r).for_each(|(y, &v)| *y += c * v);
    }
}

/// Steps one sample: `held` pairs in the ring, `k` the slot of the next pair. See the
/// module docs. Returns the outcome and `‖g⁺‖²`; when `‖g⁺‖² > restart_above` the step is
/// the plain one (`d = g⁺`, `z ← z + g⁺ = f(z)`, no pass over `U`) and the caller drops
/// every pair.
#[inline(always)]
pub(crate) fn step<T: Float>(
    f: Factors<'_, T>,
    z: &mut [T],
    fz: &[T],
    n: usize,
    (held, k): (usize, usize),
    restart_above: f64,
) -> (Update, f64) {
    let Factors {
        u,
        v,
        g,
        d,
        dg,
        vnew,
        c,
        e,
        w,
    } = f;
    c.iter_mut().chain(w.iter_mut()).for_each(|x| *x = 0.0);
    let others: Slots = (0..held).filter(|&i| i != k).collect();
    // Over V: the new residual, Δg, c, w, the three dots, and the candidate v_k with w_k
    // (written straight into slot k when it is free, else into the scratch row).
    let direct = k >= held;
    let (mut dzdg, mut dzdz, mut dgdg, mut wk, mut gg) = (0.0, 0.0, 0.0, 0.0, 0.0);
    {
        let (vk, rest) = split_row(v, n, k);
        let (cand, old_k): (&mut [T], Option<&[T]>) = if direct {
            (vk, None)
        } else {
            (vnew, Some(&*vk))
        };
        for lo in (0..n).step_by(BLOCK) {
            let hi = (lo + BLOCK).min(n);
            for j in lo..hi {
                let gn = fz[j] - z[j];
                dg[j] = gn - g[j];
                g[j] = gn;
            }
            let (gb, dgb, db) = (&g[lo..hi], &dg[lo..hi], &d[lo..hi]);
            let vb_new = &mut cand[lo..hi];
            vb_new.iter_mut().zip(db).for_each(|(y, &dz)| *y = -dz);
            for i in 0..held {
                if i == k {
                    // The oldest pair: the direction uses it only if this update is skipped.
                    if let Some(old) = old_k {
                        w[k] += lane_dot(&old[lo..hi], gb);
                    }
                    continue;
                }
                let vb = rest.row(i, lo, hi);
                let (cg, cdg) = lane_dot2(gb, dgb, vb);
                w[i] += cg;
                c[i] += cdg;
                let coef = T::from_f64(e[i]);
                vb_new.iter_mut().zip(vb).for_each(|(y, &x)| *y += coef * x);
            }
            wk += lane_dot(vb_new, gb);
            let (ab, aa) = lane_dot2(dgb, db, db);
            dzdg += ab;
            dzdz += aa;
            dgdg += lane_dot(dgb, dgb);
            gg += lane_dot(gb, gb);
        }
    }
    if gg > restart_above {
        d.copy_from_slice(g);
        z.iter_mut().zip(&*g).for_each(|(z, &gv)| *z += gv);
        return (Update::Restart, gg);
    }
    let denom = -dzdg + others.iter().map(|&i| e[i] * c[i]).sum::<f64>();
    let skip = !denom.is_finite() || denom.abs() <= SKIP_RTOL * (dzdz * dgdg).sqrt();
    if !skip {
        if !direct {
            v[k * n..(k + 1) * n].copy_from_slice(vnew);
        }
        w[k] = wk;
    }
    // The pairs in use after the update: every held one, plus slot k when added.
    let in_use = if skip { held } else { held.max(k + 1) };
    // Over U: u_k (when added), the direction d = g⁺ − Σ w_i u_i, z += d, and the next e.
    let inv = T::from_f64(1.0 / denom);
    let with_c: SmallVec<[(usize, T); 32]> =
        others.iter().map(|&i| (i, T::from_f64(-c[i]))).collect();
    let with_w: SmallVec<[(usize, T); 32]> = (0..in_use).map(|i| (i, T::from_f64(-w[i]))).collect();
    e.iter_mut().for_each(|x| *x = 0.0);
    for lo in (0..n).step_by(BLOCK) {
        let hi = (lo + BLOCK).min(n);
        if !skip {
            let (uk, rest) = split_row(u, n, k);
            let ub = &mut uk[lo..hi];
            ub.iter_mut()
                .zip(d[lo..hi].iter().zip(&dg[lo..hi]))
                .for_each(|(y, (&dz, &dgv))| *y = dz + dgv);
            for &(i, coef) in &with_c {
                let r = rest.row(i, lo, hi);
                ub.iter_mut().zip(r).for_each(|(y, &x)| *y += coef * x);
            }
            ub.iter_mut().for_each(|y| *y *= inv);
        }
        let db = &mut d[lo..hi];
        db.copy_from_slice(&g[lo..hi]);
        axpy_rows(db, u, n, lo, &with_w);
        z[lo..hi]
            .iter_mut()
            .zip(db.iter())
            .for_each(|(z, &dz)| *z += dz);
        for i in 0..in_use {
            e[i] += lane_dot(&u[i * n + lo..i * n + hi], db);
        }
    }
    let update = if skip { Update::Skipped } else { Update::Added };
    (update, gg)
}

/// Row `k` of a `rows × n` buffer, mutable, with read access to the other rows.
fn split_row<T>(buf: &mut [T], n: usize, k: usize) -> (&mut [T], Rest<'_, T>) {
    let (before, rest) = buf.split_at_mut(k * n);
    let (row, after) = rest.split_at_mut(n);
    (
        row,
        Rest {
            before,
            after,
            n,
            k,
        },
    )
}

/// The rows of a buffer other than the one split off by [`split_row`].
struct Rest<'a, T> {
    before: &'a [T],
    after: &'a [T],
    n: usize,
    k: usize,
}

impl<T> Rest<'_, T> {
    fn row(&self, i: usize, lo: usize, hi: usize) -> &[T] {
        if i < self.k {
            &self.before[i * self.n + lo..i * self.n + hi]
        } else {
            let j = i - self.k - 1;
            &self.after[j * self.n + lo..j * self.n + hi]
        }
    }
}
