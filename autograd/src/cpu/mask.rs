//! CPU loops of masked fill and dropout ([`crate::ops::mask`]): a straight zip, in parallel
//! over blocks, when the mask repeats whole over leading axes (a causal mask over
//! `[B, H, T, K]` scores); a zip of each output row with its mask row, in parallel over rows,
//! when the mask's last axis is not broadcast (a variational dropout mask `[B, 1, d]` over
//! `[B, T, d]`); a strided walk ([`crate::ops::broadcast`]) for any other broadcast.

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

/// Rows of this many values or more per rayon task in [`zip_rows`].
const ROW_TASK: usize = 1 << 13;

/// The offset into a broadcast operand (`strides` over `out`) of output row `r` (the rows
/// are the last axis; `r` counts them in row-major order over the other axes).
fn row_offset(mut r: usize, out: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for ax in (0..out.len() - 1).rev() {
        off += (r % out[ax]) * strides[ax];
        r /= out[ax];
    }
    off
}

/// `f(dst[j], src[j], m[·])` for every flat index `j`, with `m` read through `strides` over
/// `out`, as one zip per output row when the mask's last axis is not broadcast (stride 1):
/// contiguous loops that vectorise, in parallel over runs of rows above [`PAR_MIN`]. False,
/// with nothing done, for any other layout (the caller walks the strides).
fn zip_rows<T: Float, M: Sync>(
    dst: &mut [T],
    src: &[T],
    m: &[M],
    out: &[usize],
    strides: &[usize],
    f: impl Fn(&mut T, T, &M) + Sync + Send,
) -> bool {
    let Some(&inner) = out.last() else {
        return false;
    };
    if inner == 0 || (inner > 1 && strides[out.len() - 1] != 1) {
        return false;
    }
    let row = |(r, (d, s)): (usize, (&mut [T], &[T]))| {
        let at = row_offset(r, out, strides);
        for ((d, &s), mv) in d.iter_mut().zip(s).zip(&m[at..at + inner]) {
            f(d, s, mv);
        }
    };
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(inner)
            .zip(src.par_chunks(inner))
            .enumerate()
            .with_min_len((ROW_TASK / inner).max(1))
            .for_each(row);
    } else {
        dst.chunks_mut(inner)
            .zip(src.chunks(inner))
            .enumerate()
            .for_each(row);
    }
    true
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
        None => {
            let by_rows = zip_rows(values, x, m, out, strides, |o, x, &masked| {
                *o = if masked { fill } else { x }
            });
            if !by_rows {
                walk2(out, strides, strides, |j, im, _| {
                    values[j] = if m[im] { fill } else { x[j] }
                });
            }
        }
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
        None => {
            let by_rows = if acc {
                zip_rows(dst, g, keep, out, strides, |d, g, &k| {
                    *d += if k { g } else { T::ZERO }
                })
            } else {
                zip_rows(dst, g, keep, out, strides, |d, g, &k| {
                    *d = if k { g } else { T::ZERO }
                })
            };
            if !by_rows {
                walk2(out, strides, strides, |j, im, _| {
                    let v = if keep[im] { g[j] } else { T::ZERO };
                    dst[j] = if acc { dst[j] + v } else { v };
                });
            }
        }
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
    } else if !zip_rows(values, x, m, out, strides, |o, x, &m| *o = x * m) {
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
    let by_rows = if acc {
        zip_rows(dst, g, m, out, strides, |d, g, &m| *d += g * m)
    } else {
        zip_rows(dst, g, m, out, strides, |d, g, &m| *d = g * m)
    };
    if by_rows {
        return;
    }
    walk2(out, strides, strides, |j, im, _| {
        let v = g[j] * m[im];
        dst[j] = if acc { dst[j] + v } else { v };
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::broadcast::broadcast_strides;
    use proptest::prelude::*;

    /// An output shape, a mask shape broadcast to it (each axis kept or 1), and whether the
    /// output is large enough for the parallel path.
    fn shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        (1usize..5, any::<bool>())
            .prop_flat_map(|(nd, big)| {
                let hi = if big { 48 } else { 6 };
                (
                    proptest::collection::vec(1usize..hi, nd),
                    proptest::collection::vec(any::<bool>(), nd),
                )
            })
            .prop_map(|(out, keep)| {
                let mask = out
                    .iter()
                    .zip(&keep)
                    .map(|(&n, &k)| if k { n } else { 1 })
                    .collect();
                (out, mask)
            })
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| ((i as u64 * 2654435761 + seed) % 1000) as f64 / 100.0 - 5.0)
            .collect()
    }

    proptest! {
        /// Every masked fill and dropout loop, forward and VJP (both with and without
        /// accumulation), equals the strided walk over the broadcast mask, for masks
        /// broadcast along any set of axes and sizes on both sides of the parallel threshold.
        #[test]
        fn row_zips_equal_the_strided_walk((out, mshape) in shapes(), seed in 0u64..1000) {
            let n: usize = out.iter().product();
            let nm: usize = mshape.iter().product();
            let st = broadcast_strides(&mshape, &out);
            let x = values(n, seed);
            let mf = values(nm, seed + 7);
            let mb: Vec<bool> = mf.iter().map(|&v| v > 0.0).collect();
            let walk = |f: &mut dyn FnMut(usize, usize)| walk2(&out, &st, &st, |j, im, _| f(j, im));
            let start = values(n, seed + 3);

            let mut got = vec![0.0; n];
            dropout(&x, &mf, false, &out, &st, &mut got);
            let mut want = vec![0.0; n];
            walk(&mut |j, im| want[j] = x[j] * mf[im]);
            prop_assert_eq!(&got, &want, "dropout");

            for acc in [false, true] {
                let mut got = start.clone();
                dropout_backward(&x, &mf, false, &out, &st, &mut got, acc);
                let mut want = start.clone();
                walk(&mut |j, im| {
                    let v = x[j] * mf[im];
                    want[j] = if acc { want[j] + v } else { v };
                });
                prop_assert_eq!(&got, &want, "dropout_backward, acc {}", acc);

                let mut got = start.clone();
                masked_fill_backward(&x, &mb, &out, &st, &mut got, acc);
                let mut want = start.clone();
                walk(&mut |j, im| {
                    let v = if mb[im] { x[j] } else { 0.0 };
                    want[j] = if acc { want[j] + v } else { v };
                });
                prop_assert_eq!(&got, &want, "masked_fill_backward, acc {}", acc);
            }

            let mut got = vec![0.0; n];
            masked_fill(&x, &mb, -7.5, &out, &st, &mut got);
            let mut want = vec![0.0; n];
            walk(&mut |j, im| want[j] = if mb[im] { -7.5 } else { x[j] });
            prop_assert_eq!(&got, &want, "masked_fill");
        }
    }

    /// The DEQ-Transformer's layout at a size that takes the parallel row path for certain
    /// (a `[4, 1, 512]` mask over `[4, 64, 512]`: 131072 values), against the strided walk.
    #[test]
    fn a_large_variational_mask_takes_the_parallel_rows() {
        let (out, mshape) = ([4usize, 64, 512], [4usize, 1, 512]);
        let n: usize = out.iter().product();
        assert!(n >= PAR_MIN);
        let st = broadcast_strides(&mshape, &out);
        let (x, m) = (values(n, 1), values(4 * 512, 2));
        let mut got = vec![0.0; n];
        dropout(&x, &m, false, &out, &st, &mut got);
        let mut want = vec![0.0; n];
        walk2(&out, &st, &st, |j, im, _| want[j] = x[j] * m[im]);
        assert_eq!(got, want);
        let mut got = vec![1.0; n];
        dropout_backward(&x, &m, false, &out, &st, &mut got, true);
        let mut want = vec![1.0; n];
        walk2(&out, &st, &st, |j, im, _| want[j] += x[j] * m[im]);
        assert_eq!(got, want);
    }

    /// The row offset of a `[B, 1, d]` mask over `[B, T, d]` is the sample's row, whatever `t`.
    #[test]
    fn a_variational_mask_row_is_its_sample() {
        let (out, st) = ([3, 4, 5], [5, 0, 1]);
        for r in 0..12 {
            assert_eq!(row_offset(r, &out, &st), (r / 4) * 5);
        }
    }
}
