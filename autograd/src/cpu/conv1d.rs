//! CPU loops of the causal dilated convolution ([`crate::ops::conv1d`]): per batch element
//! and tap one faer product of a time-shifted block of rows (no im2col copy).

use crate::float::Float;
use crate::kernels::{self, gemm, Operand};
use crate::ops::conv1d::ConvDims;

/// Rows `from..from + count` (of `c` values each) of batch element `b` of a `[B, T, c]` tensor.
fn rows<T>(d: ConvDims, data: &[T], b: usize, from: usize, count: usize, c: usize) -> &[T] {
    let start = (b * d.time + from) * c;
    &data[start..start + count * c]
}

/// Tap `j` of the `[K, C_in, C_out]` weight: a `C_in × C_out` matrix.
fn tap<T>(w: &[T], j: usize, d: ConvDims) -> &[T] {
    &w[j * d.c_in * d.c_out..(j + 1) * d.c_in * d.c_out]
}

/// `y[b, t] = bias + Σ_j x[b, t − shift(j)]·W[j]`; `y` must hold zeros.
pub(crate) fn forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, d: ConvDims, y: &mut [T]) {
    if let Some(b) = bias {
        for row in y.chunks_mut(d.c_out) {
            row.copy_from_slice(b);
        }
    }
    for b in 0..d.batch {
        for j in 0..d.taps {
            let s = d.shift(j);
            if s >= d.time {
                continue;
            }
            let n = d.time - s;
            let start = (b * d.time + s) * d.c_out;
            let dst = &mut y[start..start + n * d.c_out];
            let xs = Operand {
                data: rows(d, x, b, 0, n, d.c_in),
                rows: n,
                cols: d.c_in,
                trans: false,
            };
            let wj = Operand {
                data: tap(w, j, d),
                rows: d.c_in,
                cols: d.c_out,
                trans: false,
            };
            gemm(dst, xs, wj, T::ONE, true);
        }
    }
}

/// `dst (+)= ∂x`: `∂x[b, t − shift(j)] += g[b, t]·W[j]ᵀ`.
pub(crate) fn grad_input<T: Float>(g: &[T], w: &[T], d: ConvDims, dst: &mut [T], acc: bool) {
    kernels::prepare(dst, acc);
    for b in 0..d.batch {
        for j in 0..d.taps {
            let s = d.shift(j);
            if s >= d.time {
                continue;
            }
            let n = d.time - s;
            let start = b * d.time * d.c_in;
            let out = &mut dst[start..start + n * d.c_in];
            let gs = Operand {
                data: rows(d, g, b, s, n, d.c_out),
                rows: n,
                cols: d.c_out,
                trans: false,
            };
            let wj = Operand {
                data: tap(w, j, d),
                rows: d.c_in,
                cols: d.c_out,
                trans: true,
            };
            gemm(out, gs, wj, T::ONE, true);
        }
    }
}

/// `dst (+)= ∂W`: `∂W[j] += x_shiftᵀ·g` summed over the batch.
pub(crate) fn grad_weight<T: Float>(g: &[T], x: &[T], d: ConvDims, dst: &mut [T], acc: bool) {
    kernels::prepare(dst, acc);
    for j in 0..d.taps {
        let s = d.shift(j);
        if s >= d.time {
            continue;
        }
        let n = d.time - s;
        let out = &mut dst[j * d.c_in * d.c_out..(j + 1) * d.c_in * d.c_out];
        for b in 0..d.batch {
            let xs = Operand {
                data: rows(d, x, b, 0, n, d.c_in),
                rows: n,
                cols: d.c_in,
                trans: true,
            };
            let gs = Operand {
                data: rows(d, g, b, s, n, d.c_out),
                rows: n,
                cols: d.c_out,
                trans: false,
            };
            gemm(out, xs, gs, T::ONE, true);
        }
    }
}
