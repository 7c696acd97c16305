//! CPU loops of the fused LSTM-style update ([`crate::ops::lstm_gates`]): one pass per row,
//! rows split in halves across rayon's threads above [`PAR_MIN`] output values.

use crate::float::{self, Float};
use crate::kernels::PAR_MIN;

/// A gradient buffer and whether to add to it.
pub(crate) struct Dst<'a, T> {
    pub(crate) buf: &'a mut [T],
    pub(crate) acc: bool,
}

/// What the forward pass kept for the VJP: `[i, f, o, g]` per row (activated), `tanh c` and
/// `c₋`.
#[derive(Clone, Copy)]
pub(crate) struct Kept<'a, T> {
    pub(crate) gates: &'a [T],
    pub(crate) tanh_c: &'a [T],
    pub(crate) c_prev: &'a [T],
}

fn split_rows(rows: usize, len: usize) -> bool {
    rows >= 2 && len >= PAR_MIN && rayon::current_num_threads() > 1
}

/// `out = [h, c]` per row from `pre` (`[rows, 4h]`) and `c_prev` (`[rows, h]`); with `keep`,
/// also the activated gates (`[rows, 4h]`) and `tanh c` (`[rows, h]`).
pub(crate) fn forward<T: Float>(
    pre: &[T],
    c_prev: &[T],
    h: usize,
    out: &mut [T],
    mut keep: Option<(&mut [T], &mut [T])>,
) {
    let rows = c_prev.len().checked_div(h).unwrap_or(0);
    if split_rows(rows, out.len()) {
        let mid = rows / 2;
        let (p0, p1) = pre.split_at(mid * 4 * h);
        let (c0, c1) = c_prev.split_at(mid * h);
        let (o0, o1) = out.split_at_mut(mid * 2 * h);
        let (k0, k1) = match keep {
            Some((g, t)) => {
                let (g0, g1) = g.split_at_mut(mid * 4 * h);
                let (t0, t1) = t.split_at_mut(mid * h);
                (Some((g0, t0)), Some((g1, t1)))
            }
            None => (None, None),
        };
        rayon::join(|| forward(p0, c0, h, o0, k0), || forward(p1, c1, h, o1, k1));
        return;
    }
    for r in 0..rows {
        let (pre, c_prev) = (
            &pre[r * 4 * h..(r + 1) * 4 * h],
            &c_prev[r * h..(r + 1) * h],
        );
        let out = &mut out[r * 2 * h..(r + 1) * 2 * h];
        match keep.as_mut() {
            Some((g, t)) => forward_row_kept(
                pre,
                c_prev,
                out,
                &mut g[r * 4 * h..(r + 1) * 4 * h],
                &mut t[r * h..(r + 1) * h],
            ),
            None => forward_row(pre, c_prev, out),
        }
    }
}

/// One row without a recording, in three passes that each vectorise and keep nothing: `h`'s
/// half first holds `i·g`, then `c = f·c₋ + i·g`, then `h = o·tanh c`.
#[inline(always)]
fn forward_row<T: Float>(pre: &[T], c_prev: &[T], out: &mut [T]) {
    let h = c_prev.len();
    let (pi, rest) = pre.split_at(h);
    let (pf, rest) = rest.split_at(h);
    let (po, pg) = rest.split_at(h);
    let (oh, oc) = out.split_at_mut(h);
    oh.iter_mut()
        .zip(pi.iter().zip(pg))
        .for_each(|(d, (&i, &g))| *d = float::sigmoid(i) * g.tanh_fast());
    oc.iter_mut()
        .zip(pf.iter().zip(c_prev))
        .zip(&*oh)
        .for_each(|((d, (&f, &cp)), &ig)| *d = float::sigmoid(f) * cp + ig);
    oh.iter_mut()
        .zip(po.iter().zip(&*oc))
        .for_each(|(d, (&o, &c))| *d = float::sigmoid(o) * c.tanh_fast());
}

/// One row with a recording, in passes that each vectorise (the row sits in L1): the
/// activated gates into `gates`, `c`, `tanh c` into `tanh_c`, then `h`.
#[inline(always)]
fn forward_row_kept<T: Float>(
    pre: &[T],
    c_prev: &[T],
    out: &mut [T],
    gates: &mut [T],
    tanh_c: &mut [T],
) {
    let h = c_prev.len();
    let (sig, cand) = gates.split_at_mut(3 * h);
    sig.iter_mut()
        .zip(&pre[..3 * h])
        .for_each(|(d, &x)| *d = float::sigmoid(x));
    cand.iter_mut()
        .zip(&pre[3 * h..])
        .for_each(|(d, &x)| *d = x.tanh_fast());
    let (i, rest) = sig.split_at(h);
    let (f, o) = rest.split_at(h);
    let (oh, oc) = out.split_at_mut(h);
    oc.iter_mut()
        .zip(f.iter().zip(c_prev))
        .zip(i.iter().zip(&*cand))
        .for_each(|((d, (&f, &cp)), (&i, &g))| *d = f * cp + i * g);
    tanh_c
        .iter_mut()
        .zip(&*oc)
        .for_each(|(t, &c)| *t = c.tanh_fast());
    oh.iter_mut()
        .zip(o.iter().zip(&*tanh_c))
        .for_each(|(d, (&o, &t))| *d = o * t);
}

/// The VJP into the pre-activations and/or the previous cell state from the cotangent `g`
/// (`[rows, 2h]`), one pass over the rows for both.
pub(crate) fn backward<T: Float>(
    kept: Kept<'_, T>,
    g: &[T],
    h: usize,
    pre: Option<Dst<'_, T>>,
    c_prev: Option<Dst<'_, T>>,
) {
    let rows = kept.c_prev.len().checked_div(h).unwrap_or(0);
    if split_rows(rows, g.len()) {
        let mid = rows / 2;
        let (a, b) = (
            kept.gates.split_at(mid * 4 * h),
            kept.tanh_c.split_at(mid * h),
        );
        let c = kept.c_prev.split_at(mid * h);
        let k0 = Kept {
            gates: a.0,
            tanh_c: b.0,
            c_prev: c.0,
        };
        let k1 = Kept {
            gates: a.1,
            tanh_c: b.1,
            c_prev: c.1,
        };
        let (g0, g1) = g.split_at(mid * 2 * h);
        let (p0, p1) = split(pre, mid * 4 * h);
        let (c0, c1) = split(c_prev, mid * h);
        rayon::join(
            || backward(k0, g0, h, p0, c0),
            || backward(k1, g1, h, p1, c1),
        );
        return;
    }
    // 0: no gradient, 1: overwrite, 2: accumulate.
    let mode = |d: &Option<Dst<'_, T>>| d.as_ref().map_or(0, |d| 1 + d.acc as u8);
    let (pm, cm) = (mode(&pre), mode(&c_prev));
    let mut empty_p: [T; 0] = [];
    let mut empty_c: [T; 0] = [];
    let dp = pre.map_or(&mut empty_p[..], |d| d.buf);
    let dc = c_prev.map_or(&mut empty_c[..], |d| d.buf);
    macro_rules! go {
        ($p:literal, $c:literal) => {
            backward_rows::<T, $p, $c>(kept, g, h, dp, dc)
        };
    }
    match (pm, cm) {
        (0, 0) => {}
        (0, 1) => go!(0, 1),
        (0, _) => go!(0, 2),
        (1, 0) => go!(1, 0),
        (1, 1) => go!(1, 1),
        (1, _) => go!(1, 2),
        (_, 0) => go!(2, 0),
        (_, 1) => go!(2, 1),
        (_, _) => go!(2, 2),
    }
}

/// A gradient buffer cut at `at` into two (both `None` for no gradient).
#[allow(clippy::type_complexity)]
fn split<T>(d: Option<Dst<'_, T>>, at: usize) -> (Option<Dst<'_, T>>, Option<Dst<'_, T>>) {
    match d {
        Some(Dst { buf, acc }) => {
            let (x, y) = buf.split_at_mut(at);
            (Some(Dst { buf: x, acc }), Some(Dst { buf: y, acc }))
        }
        None => (None, None),
    }
}

/// Writes (mode 1) or adds (mode 2) `v` into `d`; mode 0 leaves it (no gradient wanted).
#[inline(always)]
fn put<T: Float, const MODE: u8>(d: &mut T, v: T) {
    match MODE {
        1 => *d = v,
        2 => *d += v,
        _ => {}
    }
}

/// `d (+)= f(a, b, c)` element-wise (mode as [`put`]).
#[inline(always)]
fn pass3<T: Float, const MODE: u8>(
    d: &mut [T],
    a: &[T],
    b: &[T],
    c: &[T],
    f: impl Fn(T, T, T) -> T,
) {
    d.iter_mut()
        .zip(a.iter().zip(b).zip(c))
        .for_each(|(d, ((&a, &b), &c))| put::<T, MODE>(d, f(a, b, c)));
}

fn backward_rows<T: Float, const P: u8, const C: u8>(
    kept: Kept<'_, T>,
    g: &[T],
    h: usize,
    dpre: &mut [T],
    dc_prev: &mut [T],
) {
    let rows = kept.c_prev.len().checked_div(h).unwrap_or(0);
    let one = T::ONE;
    // `ċ` for one block of a row's columns, on the stack.
    const BLOCK: usize = 64;
    let mut ct_block = [T::ZERO; BLOCK];
    for r in 0..rows {
        for j0 in (0..h).step_by(BLOCK) {
            let w = BLOCK.min(h - j0);
            let col = |base: usize| base + j0..base + j0 + w;
            let ct = &mut ct_block[..w];
            let kg = &kept.gates[r * 4 * h..(r + 1) * 4 * h];
            let (i, f, o, gg) = (&kg[col(0)], &kg[col(h)], &kg[col(2 * h)], &kg[col(3 * h)]);
            let t = &kept.tanh_c[r * h..(r + 1) * h][col(0)];
            let cp = &kept.c_prev[r * h..(r + 1) * h][col(0)];
            let gr = &g[r * 2 * h..(r + 1) * 2 * h];
            let (gh, gc) = (&gr[col(0)], &gr[col(h)]);
            // ċ = ḡ_c + ḡ_h·o·(1 − tanh²c)
            ct.iter_mut()
                .zip(gc.iter().zip(gh))
                .zip(o.iter().zip(t))
                .for_each(|((d, (&gc, &gh)), (&o, &t))| *d = gc + gh * o * (one - t * t));
            if P > 0 {
                let dp = &mut dpre[r * 4 * h..(r + 1) * 4 * h];
                pass3::<T, P>(&mut dp[col(0)], ct, gg, i, |c, g, i| c * g * i * (one - i));
                pass3::<T, P>(&mut dp[col(3 * h)], ct, gg, i, |c, g, i| {
                    c * i * (one - g * g)
                });
                pass3::<T, P>(&mut dp[col(h)], ct, cp, f, |c, cp, f| {
                    c * cp * f * (one - f)
                });
                pass3::<T, P>(&mut dp[col(2 * h)], gh, t, o, |gh, t, o| {
                    gh * t * o * (one - o)
                });
            }
            if C > 0 {
                let dc = &mut dc_prev[r * h..(r + 1) * h][col(0)];
                dc.iter_mut()
                    .zip(ct.iter().zip(f))
                    .for_each(|(d, (&c, &f))| put::<T, C>(d, c * f));
            }
        }
    }
}
