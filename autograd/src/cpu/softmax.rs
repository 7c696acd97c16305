//! CPU loops of softmax and log-softmax over the last axis ([`crate::ops::softmax`]), one
//! row at a time with the vectorised row reductions of [`super::rows`], parallel over rows
//! for large tensors.

use super::rows;
use crate::float::Float;
use crate::kernels::PAR_MIN;
use rayon::prelude::*;

/// Runs `f(row index, row)` over the rows of length `d` of `out`, in parallel for large tensors.
pub fn rows_mut<T: Float>(out: &mut [T], d: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if d == 0 {
        return;
    }
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(d)
            .enumerate()
            .with_min_len((PAR_MIN / 8 / d).max(1))
            .for_each(|(r, o)| f(r, o));
    } else {
        out.chunks_mut(d).enumerate().for_each(|(r, o)| f(r, o));
    }
}

/// `out = softmax(x)` (or `log_softmax(x)` when `log`) row by row.
pub fn forward<T: Float>(x: &[T], d: usize, log: bool, out: &mut [T]) {
    rows_mut(out, d, |r, o| {
        let row = &x[r * d..(r + 1) * d];
        let m = rows::max(row);
        if log {
            let lse = if m.is_finite() {
                m + rows::exp_shifted_sum(row, m).ln()
            } else {
                m
            };
            o.iter_mut().zip(row).for_each(|(o, &v)| *o = v - lse);
        } else {
            let inv = T::ONE / rows::exp_shifted(row, m, o);
            o.iter_mut().for_each(|o| *o *= inv);
        }
    });
}

/// `out = softmax(x)` row by row over the entries the mask keeps, exact zeros where it is
/// true: `mask` is one block of rows (a whole number of rows of length `d`) that repeats over
/// `x`. A row with every entry masked, or whose kept entries are all `−∞`, is all zeros (its
/// gradient is then zero too).
///
/// When every mask row keeps a prefix and masks the rest (a causal mask, with or without
/// memory), each row exponentiates its prefix only and zero-fills the rest: half the work of
/// a causal `[T, T]` row on average, and no per-entry mask reads. Any other mask is selected
/// into `out` (`−∞` where masked) and exponentiated there.
pub fn forward_masked<T: Float>(x: &[T], mask: &[bool], d: usize, out: &mut [T]) {
    let block = mask.len();
    let block_rows = block / d.max(1);
    match prefix_lengths(mask, d) {
        Some(keep) => rows_mut(out, d, |r, o| {
            let k = keep[r % block_rows];
            let (head, tail) = o.split_at_mut(k);
            tail.fill(T::ZERO);
            let row = &x[r * d..r * d + k];
            let m = rows::max(row);
            if m == -T::INFINITY {
                // No key (or only −∞ scores): zeros, as the general path gives.
                head.fill(T::ZERO);
                return;
            }
            let inv = T::ONE / rows::exp_shifted(row, m, head);
            head.iter_mut().for_each(|o| *o *= inv);
        }),
        None => rows_mut(out, d, |r, o| {
            let row = &x[r * d..(r + 1) * d];
            let start = (r * d) % block;
            for ((o, &v), &masked) in o.iter_mut().zip(row).zip(&mask[start..start + d]) {
                *o = if masked { -T::INFINITY } else { v };
            }
            let m = rows::max(o);
            if m == -T::INFINITY {
                o.fill(T::ZERO);
                return;
            }
            let inv = T::ONE / rows::exp_shifted_in_place(o, m);
            o.iter_mut().for_each(|o| *o *= inv);
        }),
    }
}

/// For a mask whose every row of length `d` is `k` kept entries then masked ones, each row's
/// `k`; `None` for any other mask.
fn prefix_lengths(mask: &[bool], d: usize) -> Option<Vec<usize>> {
    mask.chunks(d.max(1))
        .map(|row| {
            let k = row.iter().position(|&m| m).unwrap_or(row.len());
            row[k..].iter().all(|&m| m).then_some(k)
        })
        .collect()
}

/// `dst (+)= ∂x` from the output `y` and cotangent `g`: `y ⊙ (g − ⟨g, y⟩)` for softmax,
/// `g − e^y·Σg` for log-softmax.
pub fn backward<T: Float>(y: &[T], g: &[T], d: usize, log: bool, dst: &mut [T], acc: bool) {
    rows_mut(dst, d, |r, out| {
        let (yr, gr) = (&y[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
        if log {
            let s = rows::sum(gr);
            rows::minus_scaled_exp(gr, yr, s, out, acc);
        } else {
            let dot = rows::dot(gr, yr);
            let it = out.iter_mut().zip(gr.iter().zip(yr));
            if acc {
                it.for_each(|(o, (&g, &y))| *o += y * (g - dot));
            } else {
                it.for_each(|(o, (&g, &y))| *o = y * (g - dot));
            }
        }
    });
}

/// [`backward`] over the cotangent's own buffer (`g` becomes `∂x`): each row's reduction is
/// taken before the row is rewritten.
pub fn backward_in_place<T: Float>(y: &[T], g: &mut [T], d: usize, log: bool) {
    rows_mut(g, d, |r, gr| {
        let yr = &y[r * d..(r + 1) * d];
        if log {
            let s = rows::sum(gr);
            rows::scaled_exp(yr, T::ZERO, -s, gr, true);
        } else {
            let dot = rows::dot(gr, yr);
            gr.iter_mut()
                .zip(yr)
                .for_each(|(g, &y)| *g = y * (*g - dot));
        }
    });
}
