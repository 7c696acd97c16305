//! CPU loops of masked fill and dropout ([`crate::ops::mask`]): a straight zip, in parallel
//! over blocks, when the mask repeats whole over leading axes (a causal mask over
//! `[B, H, T, K]` scores), a strided walk ([`crate::ops::broadcast`]) for any other broadcast.

use crate::float::Float;
use crate::kernels::{self, PAR_MIN};
use crate::ops::broadcast::walk2;
use rayon::prelude::*;

/// When a mask broadcast over `out` (with `strides`) is the whole mask repeated over leading
/// axes (its strides are 0 on a leading run of axes and row-major on the rest), the length of
/// one repetition; `None` for any other broadcast.
fn repeated_block(out: &[usize], strides: &[usize]) -> Option<usize> {
    let lead = strides.iter().take_while(|&&s| s == 0).count();
    let mut expect = 1;
    for ax in (lead..out.len()).rev() {
        if out[ax] != 1 && strides[ax] != expect {
            return None;
        }
        expect *= out[ax];
    }
    (expect > 0).then_some(expect)
}

/// `values = fill` where the mask `m` (read through `strides` over `out`) is true, `x`
/// elsewhere.
pub(crate) fn masked_fill<T: Float>(
    x: &[T],
    m: &[bool],
    fill: T,
    out: &[usize],
    strides: &[usize],
    values: &mut [T],
) {
    match repeated_block(out, strides) {
        // The usual case (a causal mask over [B, H, T, K] scores): the mask repeats whole,
        // so each block is a straight zip, in parallel over blocks.
        Some(block) => {
            let fill_block = |(o, xs): (&mut [T], &[T])| {
                for ((o, &x), &masked) in o.iter_mut().zip(xs).zip(m) {
                    *o = if masked { fill } else { x };
                }
            };
            let pairs = values.par_chunks_mut(block).zip(x.par_chunks(block));
            if x.len() >= PAR_MIN {
                pairs.for_each(fill_block);
            } else {
                values
                    .chunks_mut(block)
                    .zip(x.chunks(block))
                    .for_each(fill_block);
            }
        }
        None => walk2(out, strides, strides, |j, im, _| {
            values[j] = if m[im] { fill } else { x[j] }
        }),
    }
}

/// `dst (+)= g` where `keep` (read through `strides` over `out`) is true, zero elsewhere.
pub(crate) fn masked_fill_backward<T: Float>(
    g: &[T],
    keep: &[bool],
    out: &[usize],
    strides: &[usize],
    dst: &mut [T],
    acc: bool,
) {
    match repeated_block(out, strides) {
        Some(block) => {
            let pass = |(d, gs): (&mut [T], &[T])| {
                for ((d, &g), &k) in d.iter_mut().zip(gs).zip(keep) {
                    let v = if k { g } else { T::ZERO };
                    *d = if acc { *d + v } else { v };
                }
            };
            if g.len() >= PAR_MIN {
                dst.par_chunks_mut(block)
                    .zip(g.par_chunks(block))
                    .for_each(pass);
            } else {
                dst.chunks_mut(block).zip(g.chunks(block)).for_each(pass);
            }
        }
        None => walk2(out, strides, strides, |j, im, _| {
            let v = if keep[im] { g[j] } else { T::ZERO };
            dst[j] = if acc { dst[j] + v } else { v };
        }),
    }
}

/// `values = x ⊙ m` with the mask `m` read through `strides` over `out` (a straight zip when
/// `same_shape`).
pub(crate) fn dropout<T: Float>(
    x: &[T],
    m: &[T],
    same_shape: bool,
    out: &[usize],
    strides: &[usize],
    values: &mut [T],
) {
    if same_shape {
        kernels::zip_into(values, x, m, |x, m| x * m, false);
    } else {
        walk2(out, strides, strides, |j, im, _| values[j] = x[j] * m[im]);
    }
}

/// `dst (+)= g ⊙ m`, the VJP of [`dropout`].
pub(crate) fn dropout_backward<T: Float>(
    g: &[T],
    m: &[T],
    same_shape: bool,
    out: &[usize],
    strides: &[usize],
    dst: &mut [T],
    acc: bool,
) {
    if same_shape {
        kernels::zip_into(dst, g, m, |g, m| g * m, acc);
        return;
    }
    walk2(out, strides, strides, |j, im, _| {
        let v = g[j] * m[im];
        dst[j] = if acc { dst[j] + v } else { v };
    });
}
