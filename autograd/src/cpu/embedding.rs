//! CPU loops of the embedding lookup ([`crate::ops::embedding`]): a row gather forward and a
//! row scatter-add backward.

use crate::float::Float;
use crate::kernels;

/// Rows `ids` of the `[vocab, dim]` table `w`, one after the other (ids already validated).
pub(crate) fn gather<T: Float>(w: &[T], ids: &[usize], dim: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        out.extend_from_slice(&w[id * dim..(id + 1) * dim]);
    }
    out
}

/// `dst[ids[j]] += g[j]` row by row, after zeroing `dst` unless accumulating.
pub(crate) fn scatter_add<T: Float>(g: &[T], ids: &[u32], dim: usize, dst: &mut [T], acc: bool) {
    kernels::prepare(dst, acc);
    for (j, &id) in ids.iter().enumerate() {
        let row = &mut dst[id as usize * dim..(id as usize + 1) * dim];
        row.iter_mut()
            .zip(&g[j * dim..(j + 1) * dim])
            .for_each(|(o, &v)| *o += v);
    }
}
