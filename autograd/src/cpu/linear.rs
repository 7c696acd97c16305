//! CPU loops of the fused affine map ([`crate::ops::linear`]): one faer product per pass
//! ([`crate::kernels::gemm`]), with `x` viewed as `[rows, in]` and `W` as `[out, in]`.

use crate::float::Float;
use crate::kernels::{self, gemm, Operand};
use crate::ops::linear::Dims;

fn matrix<T: Float>(data: &[T], rows: usize, cols: usize, trans: bool) -> Operand<'_, T> {
    Operand {
        data,
        rows,
        cols,
        trans,
    }
}

/// `y = x·Wᵀ + b`: the rows of `y` start as copies of `b` and the product accumulates into
/// them (so no separate bias-add pass).
pub(crate) fn forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, s: Dims, y: &mut [T]) {
    if let Some(b) = bias {
        for row in y.chunks_mut(s.out.max(1)) {
            row.copy_from_slice(b);
        }
    }
    let xm = matrix(x, s.rows, s.inp, false);
    let wm = matrix(w, s.out, s.inp, true);
    gemm(y, xm, wm, T::ONE, bias.is_some());
}

/// `dst (+)= G·W` (`∂x`).
pub(crate) fn grad_input<T: Float>(g: &[T], w: &[T], s: Dims, dst: &mut [T], acc: bool) {
    let gm = matrix(g, s.rows, s.out, false);
    gemm(dst, gm, matrix(w, s.out, s.inp, false), T::ONE, acc);
}

/// `dst (+)= Gᵀ·x` (`∂W`).
pub(crate) fn grad_weight<T: Float>(g: &[T], x: &[T], s: Dims, dst: &mut [T], acc: bool) {
    let gt = matrix(g, s.rows, s.out, true);
    gemm(dst, gt, matrix(x, s.rows, s.inp, false), T::ONE, acc);
}

/// `dst (+)= Σ_rows g` over rows of `width` values (a bias gradient).
pub(crate) fn bias_grad<T: Float>(g: &[T], width: usize, dst: &mut [T], acc: bool) {
    kernels::prepare(dst, acc);
    for row in g.chunks(width) {
        dst.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
    }
}
