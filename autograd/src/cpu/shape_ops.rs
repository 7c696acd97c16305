//! CPU loops of the ops that move values ([`crate::ops::shape_ops`]): strided gathers and
//! scatters for permute, and window copies for narrow, concat and pad (each the VJP of another).

use crate::float::Float;
use crate::kernels;
use crate::ops::broadcast::walk1;
use crate::ops::shape_ops::Window;

/// `dst (+)= src`.
pub(crate) fn copy<T: Float>(src: &[T], dst: &mut [T], acc: bool) {
    kernels::write(dst, src, acc);
}

/// `out[i] = x[offset(i)]` over the index space `out_shape`, where `strides` are `x`'s
/// strides in output order.
pub(crate) fn permute<T: Float>(x: &[T], out_shape: &[usize], strides: &[usize], out: &mut [T]) {
    walk1(out_shape, strides, |i, ia| out[i] = x[ia]);
}

/// The VJP of [`permute`]: `dst[offset(i)] (+)= g[i]`.
pub(crate) fn permute_backward<T: Float>(
    g: &[T],
    out_shape: &[usize],
    strides: &[usize],
    dst: &mut [T],
    acc: bool,
) {
    if acc {
        walk1(out_shape, strides, |i, ia| dst[ia] += g[i]);
    } else {
        walk1(out_shape, strides, |i, ia| dst[ia] = g[i]);
    }
}

/// `dst (+)= src[window]`: the window of `src` (`[outer, total, inner]`) into the contiguous
/// `dst` (`[outer, size, inner]`).
pub(crate) fn read_window<T: Float>(src: &[T], w: Window, dst: &mut [T], acc: bool) {
    let chunk = w.size * w.inner;
    for o in 0..w.outer {
        kernels::write(&mut dst[o * chunk..(o + 1) * chunk], &src[w.range(o)], acc);
    }
}

/// `dst[window] (+)= src`: the contiguous `src` (`[outer, size, inner]`) into the window of
/// `dst` (`[outer, total, inner]`), the rest of `dst` left as it is.
pub(crate) fn write_window<T: Float>(src: &[T], dst: &mut [T], w: Window, acc: bool) {
    let chunk = w.size * w.inner;
    for o in 0..w.outer {
        kernels::write(&mut dst[w.range(o)], &src[o * chunk..(o + 1) * chunk], acc);
    }
}
