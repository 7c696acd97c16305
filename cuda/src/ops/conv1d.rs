//! Causal 1-D convolution over time with dilation, `[B, T, C_in] -> [B, T, C_out]`, and its
//! VJPs.
//!
//! `y[b, t] = bias + Σ_j x[b, t - s_j] · W[j]` with `W` of shape `[K, C_in, C_out]`, tap
//! shifts `s_j = (K-1-j)·dilation` and zeros for negative times. As on the CPU, each tap is a
//! matrix product of a time-shifted block of rows, here one strided-batched cuBLAS GEMM over
//! the batch per tap, placed by row offsets (no im2col copy):
//!
//! - forward, tap `j`: rows `s_j..T` of every `y[b]` `+=` rows `0..T-s_j` of `x[b]` · `W[j]`;
//! - `∂x`, tap `j`: rows `0..T-s_j` of `∂x[b]` `+=` rows `s_j..T` of `g[b]` · `W[j]ᵀ`;
//! - `∂W[j] = Σ_b x[b, 0..T-s_j]ᵀ · g[b, s_j..T]`: a sum over the batch, which one GEMM can
//!   only express over a contiguous row range, so it reads a time-shifted copy `x_s` of `x`
//!   (`x_s[b, t] = x[b, t - s_j]`, zero before `s_j`) and computes `x_sᵀ·g` over all `B·T`
//!   rows (the zero rows add nothing);
//! - `∂b = Σ_{b,t} g[b, t]` ([`linear::bias_grad`]).
//!
//! The tap with shift 0 (`j = K-1`) covers every output row, so it goes first and carries the
//! overwrite (`beta = 0`) when nothing else initialised the destination; the others add.

use super::linear::{self, beta};
use crate::blas::{gemm_to, Operand, Target};
use crate::launch::{launch, linear as grid, Arg};
use crate::{GpuBuffer, GpuFloat};

/// The sizes of one causal convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch size `B`.
    pub batch: usize,
    /// Time steps `T`.
    pub time: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Taps `K` (the first dimension of the weight).
    pub taps: usize,
    /// Distance in time between taps (≥ 1).
    pub dilation: usize,
}

impl ConvShape {
    /// Time shift of tap `j`.
    fn shift(&self, j: usize) -> usize {
        (self.taps - 1 - j) * self.dilation
    }

    fn check<T: GpuFloat>(&self, op: &str, what: &str, buf: &GpuBuffer<T>, len: usize) {
        assert_eq!(
            buf.len(),
            len,
            "{op}: {what} has {} values, {self:?} needs {len}",
            buf.len()
        );
    }

    fn x_len(&self) -> usize {
        self.batch * self.time * self.c_in
    }

    fn y_len(&self) -> usize {
        self.batch * self.time * self.c_out
    }

    fn w_len(&self) -> usize {
        self.taps * self.c_in * self.c_out
    }

    /// Tap `j` of the weight, `[C_in, C_out]`, shared by the whole batch.
    fn tap<'a, T: GpuFloat>(&self, w: &'a GpuBuffer<T>, j: usize, trans: bool) -> Operand<'a, T> {
        Operand {
            buf: w,
            offset: j * self.c_in * self.c_out,
            trans,
            rows: self.c_in,
            cols: self.c_out,
            batch_stride: 0,
        }
    }

    /// Rows `from..from + count` of every batch element of a `[B, T, cols]` buffer.
    fn rows<'a, T: GpuFloat>(
        &self,
        buf: &'a GpuBuffer<T>,
        from: usize,
        count: usize,
        cols: usize,
    ) -> Operand<'a, T> {
        Operand {
            buf,
            offset: from * cols,
            trans: false,
            rows: count,
            cols,
            batch_stride: self.time * cols,
        }
    }

    /// The same rows of a destination `[B, T, cols]` buffer.
    fn target<'a, T: GpuFloat>(
        &self,
        buf: &'a mut GpuBuffer<T>,
        from: usize,
        cols: usize,
    ) -> Target<'a, T> {
        Target {
            buf,
            offset: from * cols,
            batch_stride: self.time * cols,
        }
    }

    /// Taps whose shift leaves some rows, the shift-0 tap first.
    fn live_taps(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.taps)
            .rev()
            .map(|j| (j, self.shift(j)))
            .filter(|&(_, s)| s < self.time)
    }
}

/// The causal convolution of `x` (`[B, T, C_in]`) with `w` (`[K, C_in, C_out]`) plus an
/// optional `bias` (`[C_out]`), as a new `[B, T, C_out]` buffer.
pub fn forward<T: GpuFloat>(
    x: &GpuBuffer<T>,
    w: &GpuBuffer<T>,
    bias: Option<&GpuBuffer<T>>,
    d: ConvShape,
) -> GpuBuffer<T> {
    d.check("causal_conv1d", "x", x, d.x_len());
    d.check("causal_conv1d", "weight", w, d.w_len());
    let mut y = match bias {
        Some(b) => {
            d.check("causal_conv1d", "bias", b, d.c_out);
            linear::bias_rows(b, d.batch * d.time)
        }
        None if d.taps == 0 => x.gpu().zeros::<T>(d.y_len()),
        None => x.gpu().alloc::<T>(d.y_len()),
    };
    let mut initialised = bias.is_some();
    for (j, s) in d.live_taps() {
        let n = d.time - s;
        let dst = d.target(&mut y, s, d.c_out);
        let xs = d.rows(x, 0, n, d.c_in);
        gemm_to(dst, xs, d.tap(w, j, false), d.batch, 1.0, beta(initialised));
        initialised = true;
    }
    y
}

/// `dst (+)= ∂x`: rows `0..T-s_j` of `∂x[b]` gather `g[b, s_j..T]·W[j]ᵀ` from every tap.
pub fn grad_input<T: GpuFloat>(
    g: &GpuBuffer<T>,
    w: &GpuBuffer<T>,
    d: ConvShape,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    d.check("causal_conv1d grad_input", "g", g, d.y_len());
    d.check("causal_conv1d grad_input", "weight", w, d.w_len());
    d.check("causal_conv1d grad_input", "destination", dst, d.x_len());
    if d.taps == 0 && !acc {
        dst.fill_zero();
    }
    let mut initialised = acc;
    for (j, s) in d.live_taps() {
        let n = d.time - s;
        let gs = d.rows(g, s, n, d.c_out);
        let out = d.target(dst, 0, d.c_in);
        gemm_to(out, gs, d.tap(w, j, true), d.batch, 1.0, beta(initialised));
        initialised = true;
    }
}

/// `dst (+)= ∂W`: tap `j` gets `x_sᵀ·g` over all `B·T` rows, `x_s` the input shifted by
/// `s_j` (see the module docs). Taps that shift past the end get zeros (or nothing added).
pub fn grad_weight<T: GpuFloat>(
    g: &GpuBuffer<T>,
    x: &GpuBuffer<T>,
    d: ConvShape,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    d.check("causal_conv1d grad_weight", "g", g, d.y_len());
    d.check("causal_conv1d grad_weight", "x", x, d.x_len());
    d.check("causal_conv1d grad_weight", "destination", dst, d.w_len());
    let rows = d.batch * d.time;
    let tap_len = d.c_in * d.c_out;
    let mut shifted: Option<GpuBuffer<T>> = None;
    for j in 0..d.taps {
        let s = d.shift(j);
        let xs = if s == 0 {
            x
        } else {
            let buf = shifted.get_or_insert_with(|| x.gpu().alloc::<T>(d.x_len()));
            shift_rows(x, d.time, d.c_in, s, buf);
            &*buf
        };
        let target = Target {
            buf: &mut *dst,
            offset: j * tap_len,
            batch_stride: tap_len,
        };
        let xm = Operand::matrix(xs, rows, d.c_in, true);
        let gm = Operand::matrix(g, rows, d.c_out, false);
        gemm_to(target, xm, gm, 1, 1.0, beta(acc));
    }
}

/// `dst (+)= ∂b = Σ_{b,t} g[b, t]`.
pub fn grad_bias<T: GpuFloat>(g: &GpuBuffer<T>, d: ConvShape, dst: &mut GpuBuffer<T>, acc: bool) {
    d.check("causal_conv1d grad_bias", "g", g, d.y_len());
    linear::bias_grad(g, d.batch * d.time, d.c_out, dst, acc);
}

/// `out[b, t] = x[b, t - shift]` (zero for `t < shift`) over `[B, time, cols]` buffers.
fn shift_rows<T: GpuFloat>(
    x: &GpuBuffer<T>,
    time: usize,
    cols: usize,
    shift: usize,
    out: &mut GpuBuffer<T>,
) {
    launch::<T>(
        x.gpu(),
        "conv1d_shift_rows",
        grid(x.len()),
        &[
            Arg::Ptr(x.ptr()),
            Arg::Ptr(out.ptr()),
            Arg::len(time),
            Arg::len(cols),
            Arg::len(shift),
            Arg::len(x.len()),
        ],
    );
}
