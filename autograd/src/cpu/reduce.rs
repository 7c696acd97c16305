//! CPU loops of the axis reductions ([`crate::ops::reduce`]) on the `[outer, len, inner]` view
//! of the input: sums (scaled, for means) and maxima with the position of the first maximum,
//! and their VJPs.

use crate::float::Float;
use crate::kernels;
use crate::ops::reduce::Layout;

/// `out[o, i] = scale · Σ_l x[o, l, i]`; `out` must hold zeros.
pub(crate) fn sum<T: Float>(x: &[T], l: Layout, scale: T, out: &mut [T]) {
    for o in 0..l.outer {
        let acc = &mut out[o * l.inner..(o + 1) * l.inner];
        for r in 0..l.len {
            let row = &x[(o * l.len + r) * l.inner..(o * l.len + r + 1) * l.inner];
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
        if scale != T::ONE {
            acc.iter_mut().for_each(|a| *a *= scale);
        }
    }
}

/// `dst[o, l, i] (+)= scale · g[o, i]` for every `l`.
pub(crate) fn sum_backward<T: Float>(g: &[T], l: Layout, scale: f64, dst: &mut [T], acc: bool) {
    let Layout { outer, len, inner } = l;
    let s = T::from_f64(scale);
    for o in 0..outer {
        let gi = &g[o * inner..(o + 1) * inner];
        for l in 0..len {
            let d = &mut dst[(o * len + l) * inner..(o * len + l + 1) * inner];
            kernels::map_into(d, gi, |g| g * s, acc);
        }
    }
}

/// `out[o, i] = max_l x[o, l, i]` and `argmax[o, i]` the first `l` that attains it (a scan
/// keeping a value only when strictly larger). The axis must not be empty.
pub(crate) fn max<T: Float>(x: &[T], l: Layout, out: &mut [T], argmax: &mut [u32]) {
    for o in 0..l.outer {
        for i in 0..l.inner {
            let mut best = x[o * l.len * l.inner + i];
            let mut at = 0;
            for r in 1..l.len {
                let v = x[(o * l.len + r) * l.inner + i];
                if v > best {
                    best = v;
                    at = r;
                }
            }
            out[o * l.inner + i] = best;
            argmax[o * l.inner + i] = at as u32;
        }
    }
}

/// `dst[o, argmax[o, i], i] (+)= g[o, i]`, zeros elsewhere unless accumulating.
pub(crate) fn max_backward<T: Float>(g: &[T], argmax: &[u32], l: Layout, dst: &mut [T], acc: bool) {
    let Layout { len, inner, .. } = l;
    kernels::prepare(dst, acc);
    for (j, (&gv, &l)) in g.iter().zip(argmax).enumerate() {
        let (o, i) = (j / inner, j % inner);
        dst[(o * len + l as usize) * inner + i] += gv;
    }
}
