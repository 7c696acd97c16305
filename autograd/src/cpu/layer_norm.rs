//! CPU loops of layer normalisation over the last axis ([`crate::ops::layer_norm`]):
//! `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)`, optionally `y = x̂ ⊙ γ + β`; the backward pass
//! `∂x = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂))` with `ĝ = g ⊙ γ`. One parallel pass over rows
//! each way, vectorised row reductions ([`super::rows`]).

use super::rows;
use super::softmax::rows_mut;
use crate::float::Float;

/// Writes the normalised rows into `out` and `(μ, r)` per row into `stats`.
pub fn forward<T: Float>(
    x: &[T],
    d: usize,
    affine: Option<(&[T], &[T])>,
    eps: T,
    out: &mut [T],
    stats: &mut [(T, T)],
) {
    let inv_d = T::ONE / T::from_usize(d.max(1));
    let stats_ptr = SyncPtr(stats.as_mut_ptr());
    rows_mut(out, d, |r, o| {
        let row = &x[r * d..(r + 1) * d];
        let (mu, sq) = rows::mean_and_sq_dev(row);
        let rstd = T::ONE / (sq * inv_d + eps).sqrt();
        // SAFETY: row r's statistics are written by this call alone.
        unsafe { *stats_ptr.get().add(r) = (mu, rstd) };
        match affine {
            Some((g, b)) => {
                for i in 0..d {
                    o[i] = (row[i] - mu) * rstd * g[i] + b[i];
                }
            }
            None => o
                .iter_mut()
                .zip(row)
                .for_each(|(o, &v)| *o = (v - mu) * rstd),
        }
    });
}

/// `dst (+)= ∂x`.
pub fn backward_x<T: Float>(
    x: &[T],
    g: &[T],
    gamma: Option<&[T]>,
    stats: &[(T, T)],
    d: usize,
    dst: &mut [T],
    acc: bool,
) {
    let inv_d = T::ONE / T::from_usize(d.max(1));
    rows_mut(dst, d, |r, out| {
        let rows = r * d..(r + 1) * d;
        dx_row(out, &g[rows.clone()], &x[rows], gamma, stats[r], inv_d, acc);
    });
}

/// One row of `∂x = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂))` from its cotangent `g` and input `x`,
/// written into `out` (added to it when `acc`).
#[inline(always)]
fn dx_row<T: Float>(
    out: &mut [T],
    g: &[T],
    x: &[T],
    gamma: Option<&[T]>,
    (mu, rstd): (T, T),
    inv_d: T,
    acc: bool,
) {
    let (s_g, s_gx) = sums(g, gamma, x, mu);
    let (mean_g, mean_gx) = (s_g * inv_d, s_gx * rstd * inv_d);
    // ∂x_i = r·(ĝ_i − mean(ĝ)) − r²·mean(ĝ ⊙ x̂)·(x_i − μ) (`mean_gx` is mean(ĝ ⊙ x̂)). The γ and accumulate
    // choices are made here, outside the loops, and each loop zips its slices (no indexing),
    // so each one vectorises.
    let (a, b) = (rstd * mean_gx * rstd, rstd * mean_g);
    let term = move |gh: T, xv: T| rstd * gh - b - a * (xv - mu);
    match (gamma, acc) {
        (Some(gm), false) => out
            .iter_mut()
            .zip(g.iter().zip(gm))
            .zip(x)
            .for_each(|((o, (&gv, &w)), &xv)| *o = term(gv * w, xv)),
        (Some(gm), true) => out
            .iter_mut()
            .zip(g.iter().zip(gm))
            .zip(x)
            .for_each(|((o, (&gv, &w)), &xv)| *o += term(gv * w, xv)),
        (None, false) => out
            .iter_mut()
            .zip(g)
            .zip(x)
            .for_each(|((o, &gv), &xv)| *o = term(gv, xv)),
        (None, true) => out
            .iter_mut()
            .zip(g)
            .zip(x)
            .for_each(|((o, &gv), &xv)| *o += term(gv, xv)),
    }
}

/// [`backward_x`] over the cotangent's own buffer (`g` becomes `∂x`; each row's sums are
/// taken before the row is rewritten).
pub fn backward_x_in_place<T: Float>(
    x: &[T],
    g: &mut [T],
    gamma: Option<&[T]>,
    stats: &[(T, T)],
    d: usize,
) {
    let inv_d = T::ONE / T::from_usize(d.max(1));
    rows_mut(g, d, |r, gr| {
        let (mu, rstd) = stats[r];
        let xr = &x[r * d..(r + 1) * d];
        let (s_g, s_gx) = sums(gr, gamma, xr, mu);
        let (mean_g, mean_gx) = (s_g * inv_d, s_gx * rstd * inv_d);
        let (a, b) = (rstd * mean_gx * rstd, rstd * mean_g);
        let term = move |gh: T, xv: T| rstd * gh - b - a * (xv - mu);
        match gamma {
            Some(gm) => gr
                .iter_mut()
                .zip(gm)
                .zip(xr)
                .for_each(|((gv, &w), &xv)| *gv = term(*gv * w, xv)),
            None => gr
                .iter_mut()
                .zip(xr)
                .for_each(|(gv, &xv)| *gv = term(*gv, xv)),
        }
    });
}

/// `(Σ ĝ, Σ ĝ·(x − μ))` with `ĝ = g ⊙ γ`: [`rows::sums_centered`], one pass over the row
/// for f32 on AVX2 (explicit vector accumulators: a generic loop carrying both sums in lane
/// arrays compiled to scalar code, which made this VJP 2× slower), else two reductions.
#[inline(always)]
fn sums<T: Float>(g: &[T], gamma: Option<&[T]>, x: &[T], mu: T) -> (T, T) {
    rows::sums_centered(g, gamma, x, mu)
}

/// `dst (+)= Σ_rows g ⊙ x̂` (`∂γ`, when `beta` is false) or `Σ_rows g` (`∂β`): column sums,
/// in two halves of the rows on rayon's threads for large inputs, then added.
pub fn backward_affine<T: Float>(
    x: &[T],
    g: &[T],
    stats: &[(T, T)],
    d: usize,
    beta: bool,
    dst: &mut [T],
    acc: bool,
) {
    let sum_rows = |rows: std::ops::Range<usize>, out: &mut [T]| {
        for r in rows {
            let (mu, rstd) = stats[r];
            let (xr, gr) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
            if beta {
                out.iter_mut().zip(gr).for_each(|(o, &gv)| *o += gv);
            } else {
                out.iter_mut()
                    .zip(gr.iter().zip(xr))
                    .for_each(|(o, (&gv, &xv))| *o += gv * (xv - mu) * rstd);
            }
        }
    };
    if !acc {
        dst.fill(T::ZERO);
    }
    let rows = stats.len();
    if g.len() < crate::kernels::PAR_MIN || rayon::current_num_threads() < 2 {
        sum_rows(0..rows, dst);
        return;
    }
    let mid = rows / 2;
    let mut second = crate::pool::take_zeroed(d);
    rayon::join(
        || sum_rows(0..mid, dst),
        || sum_rows(mid..rows, &mut second),
    );
    dst.iter_mut().zip(&second).for_each(|(o, &s)| *o += s);
    crate::pool::give(second);
}

/// One gradient buffer of [`backward_fused`]: where it goes and whether to add to it.
pub struct Dst<'a, T> {
    /// The buffer (`[rows·d]` for `∂x`, `[d]` for `∂γ` and `∂β`).
    pub buf: &'a mut [T],
    /// Add to `buf` instead of overwriting it.
    pub acc: bool,
}

/// Every requested gradient in one pass over the rows: `∂x` as [`backward_x`], `∂γ` and `∂β`
/// as [`backward_affine`]. Each row is read once (its sums, then `∂x` and the row's terms of
/// the column sums, from L1); the rows are split into contiguous blocks, each with its own
/// `[d]` partial sums, added at the end. Three separate passes read `g` and `x` three times.
#[allow(clippy::too_many_arguments)] // the three optional gradients and the recorded values
pub fn backward_fused<T: Float>(
    x: &[T],
    g: &[T],
    gamma: Option<&[T]>,
    stats: &[(T, T)],
    d: usize,
    dx: Option<Dst<'_, T>>,
    dgamma: Option<Dst<'_, T>>,
    dbeta: Option<Dst<'_, T>>,
) {
    let rows = stats.len();
    assert!(
        x.len() == rows * d && g.len() == rows * d,
        "layer_norm backward: x ({}) and g ({}) must hold {rows} rows of {d}",
        x.len(),
        g.len()
    );
    if let Some(t) = &dx {
        assert_eq!(
            t.buf.len(),
            rows * d,
            "layer_norm backward: ∂x buffer length"
        );
    }
    for t in [&dgamma, &dbeta].into_iter().flatten() {
        assert_eq!(t.buf.len(), d, "layer_norm backward: ∂γ/∂β buffer length");
    }
    if d == 0 {
        return;
    }
    if rows == 0 {
        // No rows: the column sums are empty sums.
        for t in [dgamma, dbeta].into_iter().flatten() {
            if !t.acc {
                t.buf.fill(T::ZERO);
            }
        }
        return;
    }
    let inv_d = T::ONE / T::from_usize(d);
    let blocks = if g.len() >= crate::kernels::PAR_MIN {
        (4 * rayon::current_num_threads()).min(rows)
    } else {
        1
    };
    let per_block = rows.div_ceil(blocks);
    let dx_acc = dx.as_ref().is_some_and(|t| t.acc);
    let dx_ptr = dx.map(|t| SyncPtr(t.buf.as_mut_ptr()));
    let (want_gamma, want_beta) = (dgamma.is_some(), dbeta.is_some());
    let block = |b: usize| {
        let (mut pg, mut pb) = (crate::pool::take_zeroed(d), crate::pool::take_zeroed(d));
        for r in b * per_block..((b + 1) * per_block).min(rows) {
            let (mu, rstd) = stats[r];
            let (xr, gr) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
            if want_gamma {
                for ((p, &gv), &xv) in pg.iter_mut().zip(gr).zip(xr) {
                    *p += gv * (xv - mu) * rstd;
                }
            }
            if want_beta {
                pb.iter_mut().zip(gr).for_each(|(p, &gv)| *p += gv);
            }
            let Some(ptr) = dx_ptr else { continue };
            // SAFETY: row r of `∂x` is written by this block alone.
            let out = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(r * d), d) };
            dx_row(out, gr, xr, gamma, (mu, rstd), inv_d, dx_acc);
        }
        (pg, pb)
    };
    let partials: Vec<_> = if blocks > 1 {
        use rayon::prelude::*;
        (0..blocks).into_par_iter().map(block).collect()
    } else {
        vec![block(0)]
    };
    let (gammas, betas): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    let reduce = |dst: Option<Dst<'_, T>>, parts: &[Vec<T>]| {
        let Some(dst) = dst else { return };
        if !dst.acc {
            dst.buf.copy_from_slice(&parts[0]);
        } else {
            dst.buf
                .iter_mut()
                .zip(&parts[0])
                .for_each(|(o, &p)| *o += p);
        }
        for part in &parts[1..] {
            dst.buf.iter_mut().zip(part).for_each(|(o, &p)| *o += p);
        }
    };
    reduce(dgamma, &gammas);
    reduce(dbeta, &betas);
    gammas.into_iter().chain(betas).for_each(crate::pool::give);
}

/// A raw pointer that may cross threads (rows write disjoint entries).
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: used only for disjoint per-row writes (inside `rows_mut`, and by the row blocks of
// `backward_fused`, whose buffer lengths are checked first).
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_gradients_split_across_threads_equal_the_serial_sums() {
        let (rows, d) = (300, 256); // above PAR_MIN: the two-half path
        let x: Vec<f64> = (0..rows * d)
            .map(|i| ((i * 37 % 101) as f64) * 0.02 - 1.0)
            .collect();
        let g: Vec<f64> = (0..rows * d)
            .map(|i| ((i * 13 % 97) as f64) * 0.01 - 0.5)
            .collect();
        let stats: Vec<(f64, f64)> = (0..rows)
            .map(|r| (0.01 * r as f64, 1.0 + 0.001 * r as f64))
            .collect();
        for beta in [false, true] {
            let mut got = vec![0.5; d];
            backward_affine(&x, &g, &stats, d, beta, &mut got, true);
            for c in 0..d {
                let want: f64 = 0.5
                    + (0..rows)
                        .map(|r| {
                            let (mu, rstd) = stats[r];
                            let gv = g[r * d + c];
                            if beta {
                                gv
                            } else {
                                gv * (x[r * d + c] - mu) * rstd
                            }
                        })
                        .sum::<f64>();
                assert!(
                    (got[c] - want).abs() < 1e-9,
                    "column {c}: {} vs {want}",
                    got[c]
                );
            }
        }
    }

    #[test]
    fn the_fused_backward_equals_the_three_separate_passes() {
        for (rows, d) in [(5, 7), (300, 256)] {
            let x: Vec<f64> = (0..rows * d)
                .map(|i| ((i * 37 % 101) as f64) * 0.02 - 1.0)
                .collect();
            let g: Vec<f64> = (0..rows * d)
                .map(|i| ((i * 13 % 97) as f64) * 0.01 - 0.5)
                .collect();
            let gamma: Vec<f64> = (0..d).map(|i| 0.5 + 0.01 * i as f64).collect();
            let stats: Vec<(f64, f64)> = (0..rows)
                .map(|r| (0.01 * r as f64, 1.0 + 0.001 * r as f64))
                .collect();
            for gm in [Some(&gamma[..]), None] {
                for acc in [false, true] {
                    let init = |n: usize| vec![0.25; n];
                    let (mut wx, mut wg, mut wb) = (init(rows * d), init(d), init(d));
                    backward_x(&x, &g, gm, &stats, d, &mut wx, acc);
                    backward_affine(&x, &g, &stats, d, false, &mut wg, acc);
                    backward_affine(&x, &g, &stats, d, true, &mut wb, acc);
                    let (mut fx, mut fg, mut fb) = (init(rows * d), init(d), init(d));
                    backward_fused(
                        &x,
                        &g,
                        gm,
                        &stats,
                        d,
                        Some(Dst { buf: &mut fx, acc }),
                        Some(Dst { buf: &mut fg, acc }),
                        Some(Dst { buf: &mut fb, acc }),
                    );
                    for (name, want, got) in
                        [("x", &wx, &fx), ("gamma", &wg, &fg), ("beta", &wb, &fb)]
                    {
                        for (i, (w, f)) in want.iter().zip(got.iter()).enumerate() {
                            assert!((w - f).abs() < 1e-10, "{name}[{i}] rows {rows}: {f} vs {w}");
                        }
                    }
                    // Without ∂x only the column sums are written.
                    let (mut og, mut ob) = (init(d), init(d));
                    backward_fused(
                        &x,
                        &g,
                        gm,
                        &stats,
                        d,
                        None,
                        Some(Dst { buf: &mut og, acc }),
                        Some(Dst { buf: &mut ob, acc }),
                    );
                    assert_eq!((og, ob), (fg.clone(), fb.clone()));
                }
            }
        }
    }

    /// The f32 rows (the vector reductions of `reduce_f32`) against the same rows in f64.
    #[test]
    fn the_f32_backward_agrees_with_f64() {
        for (rows, d) in [(5, 7), (300, 256), (3, 33)] {
            let x: Vec<f64> = (0..rows * d)
                .map(|i| ((i * 37 % 101) as f64) * 0.02 + 2.0)
                .collect();
            let g: Vec<f64> = (0..rows * d)
                .map(|i| ((i * 13 % 97) as f64) * 0.01 - 0.5)
                .collect();
            let gamma: Vec<f64> = (0..d).map(|i| 0.5 + 0.01 * i as f64).collect();
            let stats: Vec<(f64, f64)> = (0..rows)
                .map(|r| {
                    let row = &x[r * d..(r + 1) * d];
                    let mu = row.iter().sum::<f64>() / d as f64;
                    let var = row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / d as f64;
                    (mu, 1.0 / (var + 1e-5).sqrt())
                })
                .collect();
            let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            let (x32, g32, gamma32) = (to32(&x), to32(&g), to32(&gamma));
            let stats32: Vec<(f32, f32)> =
                stats.iter().map(|&(m, r)| (m as f32, r as f32)).collect();
            for with_gamma in [false, true] {
                let (gm, gm32) = if with_gamma {
                    (Some(&gamma[..]), Some(&gamma32[..]))
                } else {
                    (None, None)
                };
                let mut want = vec![0.0f64; rows * d];
                backward_x(&x, &g, gm, &stats, d, &mut want, false);
                let mut got = vec![0.0f32; rows * d];
                backward_x(&x32, &g32, gm32, &stats32, d, &mut got, false);
                let mut in_place = g32.clone();
                backward_x_in_place(&x32, &mut in_place, gm32, &stats32, d);
                // Accumulating onto 0.25 everywhere.
                let mut added = vec![0.25f32; rows * d];
                backward_x(&x32, &g32, gm32, &stats32, d, &mut added, true);
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for i in 0..rows * d {
                    let sums = [
                        ("backward_x", got[i]),
                        ("in place", in_place[i]),
                        ("accumulated", added[i] - 0.25),
                    ];
                    for (what, v) in sums {
                        assert!(
                            (v as f64 - want[i]).abs() <= 1e-4 * scale,
                            "{what} rows {rows} d {d} gamma {with_gamma} [{i}]: {v} vs {}",
                            want[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_fused_backward_of_no_rows_zeroes_the_column_sums() {
        let (mut dg, mut db) = (vec![7.0f64; 3], vec![7.0f64; 3]);
        backward_fused::<f64>(
            &[],
            &[],
            None,
            &[],
            3,
            None,
            Some(Dst {
                buf: &mut dg,
                acc: false,
            }),
            Some(Dst {
                buf: &mut db,
                acc: true,
            }),
        );
        assert_eq!((dg, db), (vec![0.0; 3], vec![7.0; 3]));
    }
}
