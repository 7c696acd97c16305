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

/// `dst (+)= ∂x` from the output `y` and cotangent `g`: `y ⊙ (g − ⟨g, y⟩)` for softmax,
/// `g − e^y·Σg` for log-softmax.
pub fn backward<T: Float>(y: &[T], g: &[T], d: usize, log: bool, dst: &mut [T], acc: bool) {
    rows_mut(dst, d, |r, out| {
        let (yr, gr) = (&y[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
        if log {
            let s = rows::sum(gr);
            if acc {
                out.iter_mut().zip(gr).for_each(|(o, &g)| *o += g);
            } else {
                out.copy_from_slice(gr);
            }
            rows::scaled_exp(yr, T::ZERO, -s, out, true);
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
