//! NumPy broadcasting: result shapes, strided index walks and reduction back to an input shape.

use crate::tensor::Shape;

/// The broadcast shape of `a` and `b` (NumPy rules: align on the right; sizes equal or 1).
/// Panics naming `op` and both shapes when they are incompatible.
pub fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Shape {
    let n = a.len().max(b.len());
    let mut out = Shape::with_capacity(n);
    for i in 0..n {
        let da = dim_from_right(a, n - 1 - i);
        let db = dim_from_right(b, n - 1 - i);
        let d = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            panic!("{op}: shapes {a:?} and {b:?} cannot be broadcast together");
        };
        out.push(d);
    }
    out
}

fn dim_from_right(s: &[usize], from_right: usize) -> usize {
    if from_right < s.len() {
        s[s.len() - 1 - from_right]
    } else {
        1
    }
}

/// Strides of `input` (row-major) seen through the broadcast `out` shape: 0 on broadcast dims.
pub fn broadcast_strides(input: &[usize], out: &[usize]) -> Shape {
    let mut strides = Shape::from_elem(0, out.len());
    let offset = out.len() - input.len();
    let mut s = 1;
    for d in (0..input.len()).rev() {
        strides[d + offset] = if input[d] == 1 && out[d + offset] != 1 {
            0
        } else {
            s
        };
        s *= input[d];
    }
    strides
}

/// Calls `f(i, ia, ib)` for every flat output index `i` with the matching flat offsets into
/// two inputs of the given broadcast strides, in row-major order.
pub fn walk2(out: &[usize], sa: &[usize], sb: &[usize], mut f: impl FnMut(usize, usize, usize)) {
    let numel: usize = out.iter().product();
    if numel == 0 {
        return;
    }
    if out.is_empty() {
        f(0, 0, 0);
        return;
    }
    let nd = out.len();
    let inner = out[nd - 1];
    let (ia_step, ib_step) = (sa[nd - 1], sb[nd - 1]);
    let mut idx: Shape = Shape::from_elem(0, nd);
    let (mut oa, mut ob) = (0usize, 0usize);
    let mut i = 0;
    loop {
        let (mut ia, mut ib) = (oa, ob);
        for _ in 0..inner {
            f(i, ia, ib);
            i += 1;
            ia += ia_step;
            ib += ib_step;
        }
        // Advance the odometer over the outer dimensions.
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < out[d] {
                break;
            }
            oa -= sa[d] * out[d];
            ob -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
}

/// Calls `f(i, ia)` for every flat output index with the matching offset into one input.
pub fn walk1(out: &[usize], sa: &[usize], mut f: impl FnMut(usize, usize)) {
    walk2(out, sa, sa, |i, ia, _| f(i, ia));
}
