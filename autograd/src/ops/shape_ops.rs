//! Ops that move values without arithmetic: reshape, permute/transpose, narrow (slice),
//! concatenation and constant padding. Their VJPs move the gradient back the same way. The
//! loops are in `crate::cpu::shape_ops` and `crate::cuda::shape_ops`.

use crate::cpu::shape_ops as cpu;
use crate::device::{common_device_of, cuda_vjp, on_cuda, Device};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

struct ReshapeBackward;

impl<T: Float> Backward<T> for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        cpu::copy(g, dst, acc);
    }

    fn vjp_in_place(&self, _k: usize, _g: &mut [T]) -> bool {
        true
    }

    cuda_vjp!(|_op, _k, g, dst, acc| crate::cuda::shape_ops::copy(g, dst, acc));
}

/// Output index `i` reads the input at `Σ i_d · strides[d]` (`strides`: the input's strides in
/// output order); the VJP scatters back the same way.
struct PermuteBackward {
    out: Shape,
    strides: Shape,
}

impl<T: Float> Backward<T> for PermuteBackward {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        cpu::permute_backward(g, &self.out, &self.strides, dst, acc);
    }

    cuda_vjp!(|op, _k, g, dst, acc| {
        crate::cuda::shape_ops::permute_backward(g, &op.out, &op.strides, dst, acc)
    });
}

/// Copies of a `[outer, len, inner]` block: a window `[start, start + size)` of the middle axis
/// in a tensor whose middle axis has `total` entries.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) outer: usize,
    pub(crate) inner: usize,
    pub(crate) total: usize,
    pub(crate) start: usize,
    pub(crate) size: usize,
}

impl Window {
    /// The flat range of the window's entries in block `o` of the large tensor.
    pub(crate) fn range(&self, o: usize) -> std::ops::Range<usize> {
        let begin = (o * self.total + self.start) * self.inner;
        begin..begin + self.size * self.inner
    }
}

/// VJP of taking a window: the gradient lands in the window, zeros elsewhere.
struct NarrowBackward {
    w: Window,
}

impl<T: Float> Backward<T> for NarrowBackward {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        crate::kernels::prepare(dst, acc);
        cpu::write_window(g, dst, self.w, true);
    }

    cuda_vjp!(|op, _k, g, dst, acc| crate::cuda::shape_ops::narrow_backward(g, op.w, dst, acc));
}

/// VJP of placing an input inside a larger output (concat, pad): read the input's window of g.
struct PlaceBackward {
    windows: Vec<Window>,
}

impl<T: Float> Backward<T> for PlaceBackward {
    fn name(&self) -> &'static str {
        "concat/pad"
    }
    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        cpu::read_window(g, self.windows[k], dst, acc);
    }

    cuda_vjp!(|op, k, g, dst, acc| {
        crate::cuda::shape_ops::read_window(g, op.windows[k], dst, acc)
    });
}

/// The permute kernel on `x`'s device.
fn permute<T: Float>(x: &Tensor<T>, out: &[usize], strides: &[usize]) -> Tensor<T> {
    match x.device() {
        Device::Cpu => {
            let x = x.data();
            let mut values = crate::pool::take(x.len());
            cpu::permute(x, out, strides, &mut values);
            Tensor::from_vec(values, out)
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::shape_ops::permute(x, out, strides)),
    }
}

/// The narrow kernel on `x`'s device: the window `w`, shaped `out`.
fn narrow<T: Float>(x: &Tensor<T>, w: Window, out: &[usize]) -> Tensor<T> {
    match x.device() {
        Device::Cpu => {
            let mut values = crate::pool::take(w.outer * w.size * w.inner);
            cpu::read_window(x.data(), w, &mut values, false);
            Tensor::from_vec(values, out)
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::shape_ops::narrow(x, w, out)),
    }
}

/// The concat kernel on the parts' device: each part in its window.
fn concat<T: Float>(parts: &[&Var<T>], windows: &[Window], out: &[usize]) -> Tensor<T> {
    match common_device_of("concat", parts.iter().map(|p| p.value())) {
        Device::Cpu => {
            let w0 = windows[0];
            let mut values = crate::pool::take_zeroed(w0.outer * w0.total * w0.inner);
            for (p, w) in parts.iter().zip(windows) {
                cpu::write_window(p.value().data(), &mut values, *w, false);
            }
            Tensor::from_vec(values, out)
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::shape_ops::concat(parts, windows, out)),
    }
}

/// The pad kernel on `x`'s device: `x` in the window `w`, `value` elsewhere.
fn pad<T: Float>(x: &Tensor<T>, w: Window, value: f64, out: &[usize]) -> Tensor<T> {
    match x.device() {
        Device::Cpu => {
            let mut values = vec![T::from_f64(value); w.outer * w.total * w.inner];
            cpu::write_window(x.data(), &mut values, w, false);
            Tensor::from_vec(values, out)
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::shape_ops::pad(x, w, value, out)),
    }
}

fn check_axis(op: &str, shape: &[usize], axis: usize) {
    assert!(
        axis < shape.len(),
        "{op}: axis {axis} out of range for shape {shape:?}"
    );
}

impl<T: Float> Var<T> {
    /// The same values viewed with a new shape of equal element count (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Var<T> {
        let value = self.value().reshape(shape);
        record(value, &[self], || ReshapeBackward)
    }

    /// Reorders dimensions: output dimension `i` is input dimension `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Var<T> {
        let shape = self.shape();
        let mut seen = vec![false; shape.len()];
        let valid = perm.len() == shape.len()
            && perm
                .iter()
                .all(|&p| p < shape.len() && !std::mem::replace(&mut seen[p], true));
        assert!(
            valid,
            "permute: {perm:?} is not a permutation of the axes of {shape:?}"
        );
        let mut in_strides = Shape::from_elem(1, shape.len());
        for d in (0..shape.len().saturating_sub(1)).rev() {
            in_strides[d] = in_strides[d + 1] * shape[d + 1];
        }
        let out: Shape = perm.iter().map(|&p| shape[p]).collect();
        let strides: Shape = perm.iter().map(|&p| in_strides[p]).collect();
        let value = permute(self.value(), &out, &strides);
        record(value, &[self], || PermuteBackward { out, strides })
    }

    /// Swaps two dimensions.
    pub fn transpose(&self, d0: usize, d1: usize) -> Var<T> {
        let n = self.ndim();
        assert!(
            d0 < n && d1 < n,
            "transpose: axes ({d0}, {d1}) out of range for shape {:?}",
            self.shape()
        );
        let mut perm: Vec<usize> = (0..n).collect();
        perm.swap(d0, d1);
        self.permute(&perm)
    }

    /// The entries `start..start + len` along `axis` (a slice).
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Var<T> {
        let shape = self.shape();
        check_axis("narrow", shape, axis);
        assert!(
            start + len <= shape[axis],
            "narrow: range {start}..{} out of bounds for axis {axis} of shape {shape:?}",
            start + len
        );
        let w = Window {
            outer: shape[..axis].iter().product(),
            inner: shape[axis + 1..].iter().product(),
            total: shape[axis],
            start,
            size: len,
        };
        let mut out = Shape::from_slice(shape);
        out[axis] = len;
        record(narrow(self.value(), w, &out), &[self], || NarrowBackward {
            w,
        })
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    pub fn concat(parts: &[&Var<T>], axis: usize) -> Var<T> {
        assert!(!parts.is_empty(), "concat: no tensors to join");
        assert!(parts.len() <= 255, "concat: at most 255 parts");
        let first = parts[0].shape();
        check_axis("concat", first, axis);
        let mut total = 0;
        for p in parts {
            let s = p.shape();
            let same = s.len() == first.len()
                && s.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(d, (a, b))| d == axis || a == b);
            assert!(
                same,
                "concat: shapes {first:?} and {s:?} differ off axis {axis}"
            );
            total += s[axis];
        }
        let outer: usize = first[..axis].iter().product();
        let inner: usize = first[axis + 1..].iter().product();
        let mut windows = Vec::with_capacity(parts.len());
        let mut start = 0;
        for p in parts {
            let size = p.shape()[axis];
            windows.push(Window {
                outer,
                inner,
                total,
                start,
                size,
            });
            start += size;
        }
        let mut out = Shape::from_slice(first);
        out[axis] = total;
        record(concat(parts, &windows, &out), parts, || PlaceBackward {
            windows,
        })
    }

    /// Pads `axis` with `before` entries in front and `after` behind, all equal to `value`.
    pub fn pad(&self, axis: usize, before: usize, after: usize, value: f64) -> Var<T> {
        let shape = self.shape();
        check_axis("pad", shape, axis);
        let w = Window {
            outer: shape[..axis].iter().product(),
            inner: shape[axis + 1..].iter().product(),
            total: shape[axis] + before + after,
            start: before,
            size: shape[axis],
        };
        let mut out = Shape::from_slice(shape);
        out[axis] = w.total;
        record(pad(self.value(), w, value, &out), &[self], || {
            PlaceBackward { windows: vec![w] }
        })
    }
}
