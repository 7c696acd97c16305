//! CPU loops of element-wise arithmetic with broadcasting and of scalar affine maps
//! ([`crate::ops::binary`]): straight zips (parallel through [`crate::kernels`]) when the
//! shapes agree, strided walks ([`crate::ops::broadcast`]) otherwise.

use crate::float::Float;
use crate::kernels;
use crate::ops::binary::Kind;
use crate::ops::broadcast::{broadcast_strides, walk1, walk2};

/// `out = a op b`, with `a` and `b` broadcast to `out_shape`.
pub(crate) fn forward<T: Float>(
    kind: Kind,
    (a, a_shape): (&[T], &[usize]),
    (b, b_shape): (&[T], &[usize]),
    out_shape: &[usize],
    out: &mut [T],
) {
    if a_shape == b_shape {
        kernels::zip_into(out, a, b, |x, y| kind.apply(x, y), false);
    } else {
        let sa = broadcast_strides(a_shape, out_shape);
        let sb = broadcast_strides(b_shape, out_shape);
        walk2(out_shape, &sa, &sb, |i, ia, ib| {
            out[i] = kind.apply(a[ia], b[ib])
        });
    }
}

/// `dst (+)= ∂(a op b)/∂(input k) · g` when both operands have the output's shape. The
/// operands are read only where the derivative needs them (`mul`, `div`).
pub(crate) fn backward_same_shape<T: Float>(
    kind: Kind,
    k: usize,
    g: &[T],
    (a, b): (&[T], &[T]),
    dst: &mut [T],
    acc: bool,
) {
    match kind {
        Kind::Add => kernels::write(dst, g, acc),
        Kind::Sub if k == 0 => kernels::write(dst, g, acc),
        Kind::Sub => kernels::map_into(dst, g, |g| -g, acc),
        Kind::Mul if k == 0 => kernels::zip_into(dst, g, b, |g, b| g * b, acc),
        Kind::Mul => kernels::zip_into(dst, g, a, |g, a| g * a, acc),
        Kind::Div if k == 0 => kernels::zip_into(dst, g, b, |g, b| g / b, acc),
        Kind::Div => kernels::zip3_into(dst, g, a, b, |g, a, b| -g * a / (b * b), acc),
    }
}

/// [`backward_same_shape`] over the cotangent's own buffer; false (leaving `g` untouched) for
/// the one case that needs a separate output (`∂/∂b` of `div`).
pub(crate) fn backward_same_shape_in_place<T: Float>(
    kind: Kind,
    k: usize,
    g: &mut [T],
    (a, b): (&[T], &[T]),
) -> bool {
    match (kind, k) {
        (Kind::Add, _) | (Kind::Sub, 0) => {}
        (Kind::Sub, _) => kernels::map_self(g, |g| -g),
        (Kind::Mul, 0) => kernels::zip_into_self(g, b, |g, b| g * b),
        (Kind::Mul, _) => kernels::zip_into_self(g, a, |g, a| g * a),
        (Kind::Div, 0) => kernels::zip_into_self(g, b, |g, b| g / b),
        (Kind::Div, _) => return false,
    }
    true
}

/// `dst (+)= ∂(a op b)/∂(input k) · g` summed over the axes along which input `k` was
/// broadcast to `out`. `add` and `sub` read neither operand (empty slices stand in for them).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_broadcast<T: Float>(
    kind: Kind,
    k: usize,
    g: &[T],
    (a, a_shape): (&[T], &[usize]),
    (b, b_shape): (&[T], &[usize]),
    out: &[usize],
    dst: &mut [T],
    acc: bool,
) {
    kernels::prepare(dst, acc);
    if matches!(kind, Kind::Add | Kind::Sub) {
        // ±g summed over the broadcast axes.
        let sign = if kind == Kind::Sub && k == 1 {
            -T::ONE
        } else {
            T::ONE
        };
        let target = if k == 0 { a_shape } else { b_shape };
        reduce_broadcast(g, target, out, sign, dst);
        return;
    }
    let sa = broadcast_strides(a_shape, out);
    let sb = broadcast_strides(b_shape, out);
    walk2(out, &sa, &sb, |i, ia, ib| {
        let d = kind.partial(k, g[i], a[ia], b[ib]);
        dst[if k == 0 { ia } else { ib }] += d;
    });
}

/// `dst += sign · g` summed over the axes along which `target` was broadcast to `out`. A
/// target that is a trailing block of `out` (a bias `[d]` over `[B, T, d]`) is a sum of
/// contiguous rows; anything else walks the broadcast strides.
fn reduce_broadcast<T: Float>(g: &[T], target: &[usize], out: &[usize], sign: T, dst: &mut [T]) {
    let n: usize = target.iter().product();
    let lead = out.len() - target.len();
    let trailing = target.iter().zip(&out[lead..]).all(|(a, b)| a == b);
    if trailing && n > 0 {
        for row in g.chunks_exact(n) {
            dst.iter_mut().zip(row).for_each(|(d, &v)| *d += sign * v);
        }
        return;
    }
    let st = broadcast_strides(target, out);
    walk1(out, &st, |i, it| dst[it] += sign * g[i]);
}

/// `out = scale · x + shift`.
pub(crate) fn affine<T: Float>(x: &[T], scale: f64, shift: f64, out: &mut [T]) {
    let (s, c) = (T::from_f64(scale), T::from_f64(shift));
    kernels::map_into(out, x, move |x| x * s + c, false);
}

/// `dst (+)= scale · g` (a copy or add when `scale` is 1).
pub(crate) fn scale<T: Float>(g: &[T], scale: f64, dst: &mut [T], acc: bool) {
    if scale == 1.0 {
        kernels::write(dst, g, acc);
    } else {
        let s = T::from_f64(scale);
        kernels::map_into(dst, g, |g| g * s, acc);
    }
}

/// `g = scale · g` in place.
pub(crate) fn scale_in_place<T: Float>(g: &mut [T], scale: f64) {
    if scale != 1.0 {
        let s = T::from_f64(scale);
        kernels::map_self(g, |g| g * s);
    }
}
