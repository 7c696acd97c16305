//! One Broyden iteration of one sample in four passes over the low-rank factors.
//!
//! With `m` pairs held, the update and the next direction read the factors `U` and `V`
//! (`m × n` each) and the state vectors. Done term by term ([`crate::broyden`]'s maths:
//! `c = V·Δg`, `e = U·Δz`, `u_k`, `v_k`, then `V·g` and the direction), that is three passes
//! over each factor: at W2's size (8 samples of 32768 values, 16 pairs) 96 MiB of reads per
//! iteration, memory-bound. The same sums in fused passes read each factor twice:
//!
//! - A, over `V` and the state: `g⁺ = f(z) − z`, `Δg = g⁺ − g`; `c_i = v_i·Δg` (`i ≠ k`),
//!   `w_i = v_i·g⁺` (every held `i`), and `Δz·Δg`, `Δz·Δz`, `Δg·Δg`;
//! - B, over `U`: `e_i = u_i·Δz` (`i ≠ k`), then the denominator `−Δz·Δg + Σ e_i c_i`;
//! - C, over `V`: `v_k = −Δz + Σ e_i v_i`, and `w_k = v_k·g⁺` in the same block loop;
//! - D, over `U`: `u_k = (Δz + Δg − Σ c_i u_i)/denom`, then the direction
//!   `d = g⁺ − Σ w_i u_i` (with the new `u_k`) and `z ← z + d`, block by block.
//!
//! `k` is the ring slot of the new pair (the oldest pair when the ring is full, left out of
//! every sum so the secant condition holds, see [`crate::broyden`]). When the denominator
//! vanishes the update is skipped: C is not run and D uses the held pairs as they are.
//! Dot products accumulate in f64 over [`LANES`] independent lanes, blocks of [`BLOCK`]
//! values keep the state vectors' blocks in L1 while the factors stream past.

use deq_autograd::Float;
use smallvec::SmallVec;

const LANES: usize = 8;

/// Ring slots, on the stack for rings of up to 32 pairs.
type Slots = SmallVec<[usize; 32]>;
const BLOCK: usize = 1024;

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
    /// Per-slot scratch: `c_i`, `e_i`, `w_i`.
    pub c: &'a mut [f64],
    /// See `c`.
    pub e: &'a mut [f64],
    /// See `c`.
    pub w: &'a mut [f64],
}

/// The outcome of a step: whether a pair was added.
pub(crate) enum Update {
    Added,
    Skipped,
}

#[inline(always)]
fn lane_dot<T: Float>(a: &[T], b: &[T]) -> f64 {
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

/// `(a·b, c·b)` over one read of `b`.
#[inline(always)]
fn lane_dot2<T: Float>(a: &[T], c: &[T], b: &[T]) -> (f64, f64) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let full = b.len() - b.len() % LANES;
    for j in (0..full).step_by(LANES) {
        for l in 0..LANES {
            let bv = b[j + l].to_f64();
            s1[l] += a[j + l].to_f64() * bv;
            s2[l] += c[j + l].to_f64() * bv;
        }
    }
    let (mut t1, mut t2) = (s1.iter().sum::<f64>(), s2.iter().sum::<f64>());
    for j in full..b.len() {
        let bv = b[j].to_f64();
        t1 += a[j].to_f64() * bv;
        t2 += c[j].to_f64() * bv;
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
/// module docs.
#[inline(always)]
pub(crate) fn step<T: Float>(
    f: Factors<'_, T>,
    z: &mut [T],
    fz: &[T],
    n: usize,
    held: usize,
    k: usize,
) -> Update {
    let Factors {
        u,
        v,
        g,
        d,
        dg,
        c,
        e,
        w,
    } = f;
    c.iter_mut()
        .chain(e.iter_mut())
        .chain(w.iter_mut())
        .for_each(|x| *x = 0.0);
    // A: the new residual, Δg, c = V·Δg (i ≠ k), w = V·g⁺ (all held), and the three dots.
    let (mut dzdg, mut dzdz, mut dgdg) = (0.0, 0.0, 0.0);
    for lo in (0..n).step_by(BLOCK) {
        let hi = (lo + BLOCK).min(n);
        for j in lo..hi {
            let gn = fz[j] - z[j];
            dg[j] = gn - g[j];
            g[j] = gn;
        }
        let (gb, dgb, db) = (&g[lo..hi], &dg[lo..hi], &d[lo..hi]);
        for i in 0..held {
            let vb = &v[i * n + lo..i * n + hi];
            if i == k {
                w[i] += lane_dot(vb, gb);
            } else {
                let (cg, cdg) = lane_dot2(gb, dgb, vb);
                w[i] += cg;
                c[i] += cdg;
            }
        }
        let (ab, aa) = lane_dot2(dgb, db, db);
        dzdg += ab;
        dzdz += aa;
        dgdg += lane_dot(dgb, dgb);
    }
    // B: e = U·Δz (i ≠ k).
    for lo in (0..n).step_by(BLOCK) {
        let hi = (lo + BLOCK).min(n);
        let db = &d[lo..hi];
        for i in (0..held).filter(|&i| i != k) {
            e[i] += lane_dot(&u[i * n + lo..i * n + hi], db);
        }
    }
    let denom = -dzdg
        + (0..held)
            .filter(|&i| i != k)
            .map(|i| e[i] * c[i])
            .sum::<f64>();
    let skip = !denom.is_finite() || denom.abs() <= SKIP_RTOL * (dzdz * dgdg).sqrt();
    // The pairs the sums run over: all held ones when skipping, else all but slot k.
    let others: Slots = (0..held).filter(|&i| i != k || skip).collect();
    let coefs = |x: &[f64], sign: f64| -> SmallVec<[(usize, T); 32]> {
        others
            .iter()
            .map(|&i| (i, T::from_f64(sign * x[i])))
            .collect()
    };
    if !skip {
        // C: v_k = −Δz + Σ e_i v_i, and w_k = v_k·g⁺.
        let with_e = coefs(e, 1.0);
        let (vk, rest) = split_row(v, n, k);
        let mut wk = 0.0;
        for lo in (0..n).step_by(BLOCK) {
            let hi = (lo + BLOCK).min(n);
            let vb = &mut vk[lo..hi];
            vb.iter_mut().zip(&d[lo..hi]).for_each(|(v, &dz)| *v = -dz);
            for &(i, coef) in &with_e {
                let r = rest.row(i, lo, hi);
                vb.iter_mut().zip(r).for_each(|(y, &x)| *y += coef * x);
            }
            wk += lane_dot(vb, &g[lo..hi]);
        }
        w[k] = wk;
    }
    // D: u_k = (Δz + Δg − Σ c_i u_i)/denom (unless skipped), then d = g⁺ − Σ w_i u_i, z += d.
    let inv = T::from_f64(1.0 / denom);
    let (with_c, with_w) = (coefs(c, -1.0), coefs(w, -1.0));
    let wk = T::from_f64(-w[k]);
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
        if !skip {
            let r = &u[k * n + lo..k * n + hi];
            db.iter_mut().zip(r).for_each(|(y, &x)| *y += wk * x);
        }
        z[lo..hi]
            .iter_mut()
            .zip(db.iter())
            .for_each(|(z, &dz)| *z += dz);
    }
    if skip {
        Update::Skipped
    } else {
        Update::Added
    }
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
