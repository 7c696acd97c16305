//! Element-wise kernels: unary functions and their VJPs, affine maps, scaled copies, fills.

use crate::launch::{launch, linear, Arg};
use crate::{GpuBuffer, GpuFloat};

/// The element-wise functions of the engine (codes shared with `elementwise.cu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// `ln x`
    Log,
    /// `tanh x`
    Tanh,
    /// `1 / (1 + e^-x)`, overflow-free
    Sigmoid,
    /// `max(x, 0)`
    Relu,
    /// GELU, tanh form
    Gelu,
    /// `√x`
    Sqrt,
    /// `x^n`
    Powi(i32),
}

impl UnaryKind {
    fn code(self) -> (i32, i32) {
        match self {
            UnaryKind::Neg => (0, 0),
            UnaryKind::Exp => (1, 0),
            UnaryKind::Log => (2, 0),
            UnaryKind::Tanh => (3, 0),
            UnaryKind::Sigmoid => (4, 0),
            UnaryKind::Relu => (5, 0),
            UnaryKind::Gelu => (6, 0),
            UnaryKind::Sqrt => (7, 0),
            UnaryKind::Powi(n) => (8, n),
        }
    }
}

fn same_len<T: GpuFloat>(op: &str, a: &GpuBuffer<T>, b: &GpuBuffer<T>) {
    assert_eq!(
        a.len(),
        b.len(),
        "{op}: buffers of {} and {} values",
        a.len(),
        b.len()
    );
}

/// `f(x)` element-wise into a new buffer.
pub fn unary<T: GpuFloat>(kind: UnaryKind, x: &GpuBuffer<T>) -> GpuBuffer<T> {
    let y = x.gpu().alloc::<T>(x.len());
    let (code, n) = kind.code();
    launch::<T>(
        x.gpu(),
        "unary_fwd",
        linear(x.len()),
        &[
            Arg::I32(code),
            Arg::I32(n),
            Arg::Ptr(x.ptr()),
            Arg::Ptr(y.ptr()),
            Arg::len(x.len()),
        ],
    );
    y
}

/// `dst (+)= g · f'(x)`, given `x` and `y = f(x)`.
pub fn unary_backward<T: GpuFloat>(
    kind: UnaryKind,
    g: &GpuBuffer<T>,
    x: &GpuBuffer<T>,
    y: &GpuBuffer<T>,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    same_len("unary_backward", g, x);
    same_len("unary_backward", g, y);
    same_len("unary_backward", g, dst);
    let (code, n) = kind.code();
    launch::<T>(
        g.gpu(),
        "unary_bwd",
        linear(g.len()),
        &[
            Arg::I32(code),
            Arg::I32(n),
            Arg::Ptr(g.ptr()),
            Arg::Ptr(x.ptr()),
            Arg::Ptr(y.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(g.len()),
            Arg::flag(acc),
        ],
    );
}

/// `scale · x + shift` into a new buffer.
pub fn affine<T: GpuFloat>(x: &GpuBuffer<T>, scale: f64, shift: f64) -> GpuBuffer<T> {
    let y = x.gpu().alloc::<T>(x.len());
    launch::<T>(
        x.gpu(),
        "affine",
        linear(x.len()),
        &[
            Arg::Ptr(x.ptr()),
            Arg::real::<T>(scale),
            Arg::real::<T>(shift),
            Arg::Ptr(y.ptr()),
            Arg::len(x.len()),
        ],
    );
    y
}

/// `dst (+)= scale · src`; with `scale = 1` this is the write-or-accumulate of the tape.
pub fn scale_into<T: GpuFloat>(src: &GpuBuffer<T>, scale: f64, dst: &mut GpuBuffer<T>, acc: bool) {
    same_len("scale_into", src, dst);
    launch::<T>(
        src.gpu(),
        "scale_into",
        linear(src.len()),
        &[
            Arg::Ptr(src.ptr()),
            Arg::real::<T>(scale),
            Arg::Ptr(dst.ptr()),
            Arg::len(src.len()),
            Arg::flag(acc),
        ],
    );
}

/// `dst (+)= s · src` where `s` is the single value of the device buffer `scale` (a loss
/// cotangent, say), read on the device.
pub fn scale_by_device_scalar<T: GpuFloat>(
    src: &GpuBuffer<T>,
    scale: &GpuBuffer<T>,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    same_len("scale_by_device_scalar", src, dst);
    assert_eq!(
        scale.len(),
        1,
        "scale_by_device_scalar: scale has {} values",
        scale.len()
    );
    launch::<T>(
        src.gpu(),
        "scale_by_device_scalar",
        linear(src.len()),
        &[
            Arg::Ptr(src.ptr()),
            Arg::Ptr(scale.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(src.len()),
            Arg::flag(acc),
        ],
    );
}

/// Sets every value to `value`.
pub fn fill<T: GpuFloat>(dst: &mut GpuBuffer<T>, value: f64) {
    launch::<T>(
        dst.gpu(),
        "fill",
        linear(dst.len()),
        &[
            Arg::Ptr(dst.ptr()),
            Arg::real::<T>(value),
            Arg::len(dst.len()),
        ],
    );
}
