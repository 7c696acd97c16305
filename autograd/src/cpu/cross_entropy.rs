//! CPU loops of the fused cross-entropy ([`crate::ops::cross_entropy`]): per row the
//! log-sum-exp, and the mean loss (forward); `g·(e^(x − lse) − e_t)/N` straight into the
//! gradient buffer (backward); vectorised ([`super::rows`]) and parallel over rows.

use super::rows;
use crate::float::Float;
use crate::kernels::PAR_MIN;
use rayon::prelude::*;

/// Rows per rayon task: about [`PAR_MIN`] logits each, at least one row.
fn rows_per_task(c: usize) -> usize {
    (PAR_MIN / c.max(1)).max(1)
}

/// The log-sum-exp of every row of `x` (`rows × c`) into `lse`.
pub fn logsumexp_rows<T: Float>(x: &[T], c: usize, lse: &mut [T]) {
    let pass = |(r, o): (usize, &mut T)| *o = rows::logsumexp(&x[r * c..(r + 1) * c]);
    if x.len() >= PAR_MIN {
        lse.par_iter_mut()
            .enumerate()
            .with_min_len(rows_per_task(c))
            .for_each(pass);
    } else {
        lse.iter_mut().enumerate().for_each(pass);
    }
}

/// `(1/N) Σ_r (lse_r − x_r[t_r])` over the `N` rows of `x` (`N × c`), accumulated in f64.
pub fn mean_loss<T: Float>(x: &[T], lse: &[T], targets: &[usize], c: usize) -> f64 {
    let total: f64 = targets
        .iter()
        .enumerate()
        .map(|(r, &t)| (lse[r] - x[r * c + t]).to_f64())
        .sum();
    total / lse.len().max(1) as f64
}

/// `dst (+)= scale·(softmax(x_r) − e_{t_r})` for every row `r`, from the saved `lse`.
pub fn backward<T: Float>(
    x: &[T],
    lse: &[T],
    targets: &[usize],
    c: usize,
    scale: T,
    dst: &mut [T],
    acc: bool,
) {
    let row = |(r, d): (usize, &mut [T])| {
        rows::scaled_exp(&x[r * c..(r + 1) * c], lse[r], scale, d, acc);
        d[targets[r]] -= scale;
    };
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(c)
            .enumerate()
            .with_min_len(rows_per_task(c))
            .for_each(row);
    } else {
        dst.chunks_mut(c).enumerate().for_each(row);
    }
}
