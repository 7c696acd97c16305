//! The fused linear layer `y = x·Wᵀ + b` and its VJPs, with `x` viewed as `[rows, inp]` and
//! `W` as `[out, inp]` (PyTorch's layout).
//!
//! The products go through cuBLAS ([`crate::blas`]); this module adds the bias broadcast
//! (the output rows start as copies of `b`, then the product accumulates into them with
//! `beta = 1`, as the CPU code does) and the bias gradient, a deterministic column sum. The
//! VJPs write (`acc == false`) or add (`acc == true`) into the gradient buffer directly:
//! `∂x = G·W`, `∂W = Gᵀ·x` (both with `beta = acc`), `∂b = Σ_rows G`.

use crate::blas::{gemm, Operand};
use crate::launch::{launch, linear, Arg};
use crate::{GpuBuffer, GpuFloat};
use cudarc::driver::LaunchConfig;

/// `LINEAR_TILE` in linear.cu: columns per block of the column sum, and its most row lanes.
const TILE: usize = 32;

/// The sizes of one linear map: `rows` input rows of `inp` values, `out` outputs per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Input rows (the product of the leading dimensions of `x`).
    pub rows: usize,
    /// Input features (the last dimension of `x`, the columns of `W`).
    pub inp: usize,
    /// Output features (the rows of `W`).
    pub out: usize,
}

impl LinearShape {
    fn check<T: GpuFloat>(&self, op: &str, what: &str, buf: &GpuBuffer<T>, len: usize) {
        assert_eq!(
            buf.len(),
            len,
            "{op}: {what} has {} values, {self:?} needs {len}",
            buf.len()
        );
    }
}

/// `1` when accumulating, `0` when overwriting: the GEMM `beta` of the tape's `acc` flag.
pub fn beta(acc: bool) -> f64 {
    if acc {
        1.0
    } else {
        0.0
    }
}

/// A new `rows × bias.len()` buffer whose every row is a copy of `bias`.
pub fn bias_rows<T: GpuFloat>(bias: &GpuBuffer<T>, rows: usize) -> GpuBuffer<T> {
    let cols = bias.len();
    let y = bias.gpu().alloc::<T>(rows * cols);
    launch::<T>(
        bias.gpu(),
        "linear_bias_rows",
        linear(rows * cols),
        &[
            Arg::Ptr(bias.ptr()),
            Arg::Ptr(y.ptr()),
            Arg::len(cols),
            Arg::len(rows * cols),
        ],
    );
    y
}

/// `dst[c] (+)= Σ_r g[r, c]` over a row-major `rows × cols` matrix `g`: the bias gradient of
/// a linear layer or a convolution, and the sum over a batch of per-item gradients. One
/// thread block per 32 columns with a fixed summation order (deterministic, no atomics).
pub fn bias_grad<T: GpuFloat>(
    g: &GpuBuffer<T>,
    rows: usize,
    cols: usize,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    assert_eq!(
        g.len(),
        rows * cols,
        "linear bias_grad: g has {} values, not {rows}x{cols}",
        g.len()
    );
    assert_eq!(
        dst.len(),
        cols,
        "linear bias_grad: destination has {} values for {cols} columns",
        dst.len()
    );
    if cols == 0 {
        return;
    }
    let lanes = rows.next_power_of_two().clamp(1, TILE) as u32;
    let cfg = LaunchConfig {
        grid_dim: (cols.div_ceil(TILE).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (TILE as u32, lanes, 1),
        shared_mem_bytes: 0,
    };
    launch::<T>(
        g.gpu(),
        "linear_bias_grad",
        cfg,
        &[
            Arg::Ptr(g.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(rows),
            Arg::len(cols),
            Arg::flag(acc),
        ],
    );
}

/// `x·Wᵀ + b` as a new `[rows, out]` buffer, `b` optional.
pub fn forward<T: GpuFloat>(
    x: &GpuBuffer<T>,
    w: &GpuBuffer<T>,
    bias: Option<&GpuBuffer<T>>,
    s: LinearShape,
) -> GpuBuffer<T> {
    s.check("linear", "x", x, s.rows * s.inp);
    s.check("linear", "weight", w, s.out * s.inp);
    let mut y = match bias {
        Some(b) => {
            s.check("linear", "bias", b, s.out);
            bias_rows(b, s.rows)
        }
        None => x.gpu().alloc::<T>(s.rows * s.out),
    };
    let xm = Operand::matrix(x, s.rows, s.inp, false);
    let wm = Operand::matrix(w, s.out, s.inp, true);
    gemm(&mut y, xm, wm, 1, 1.0, beta(bias.is_some()));
    y
}

/// `dst (+)= G·W`: the VJP for `x` (`dst` is `[rows, inp]`, `g` is `[rows, out]`).
pub fn grad_input<T: GpuFloat>(
    g: &GpuBuffer<T>,
    w: &GpuBuffer<T>,
    s: LinearShape,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    s.check("linear grad_input", "g", g, s.rows * s.out);
    s.check("linear grad_input", "weight", w, s.out * s.inp);
    s.check("linear grad_input", "destination", dst, s.rows * s.inp);
    let gm = Operand::matrix(g, s.rows, s.out, false);
    let wm = Operand::matrix(w, s.out, s.inp, false);
    gemm(dst, gm, wm, 1, 1.0, beta(acc));
}

/// `dst (+)= Gᵀ·x`: the VJP for `W` (`dst` is `[out, inp]`).
pub fn grad_weight<T: GpuFloat>(
    g: &GpuBuffer<T>,
    x: &GpuBuffer<T>,
    s: LinearShape,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    s.check("linear grad_weight", "g", g, s.rows * s.out);
    s.check("linear grad_weight", "x", x, s.rows * s.inp);
    s.check("linear grad_weight", "destination", dst, s.out * s.inp);
    let gm = Operand::matrix(g, s.rows, s.out, true);
    let xm = Operand::matrix(x, s.rows, s.inp, false);
    gemm(dst, gm, xm, 1, 1.0, beta(acc));
}
