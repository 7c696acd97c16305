//! Sums, means and maxima over one axis, several axes, or everything.
//!
//! Each reduction views the input as `[outer, len, inner]` around the reduced axis. The VJP of a
//! sum broadcasts the incoming gradient back over the axis; the VJP of a max sends it to the
//! position of the (first) maximum. The loops are in `crate::cpu::reduce` and
//! `crate::cuda::reduce`.

use crate::cpu::reduce as cpu;
use crate::device::{cuda_type, cuda_vjp, on_cuda, Device, Kept};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

/// A tensor viewed as `[outer, len, inner]` around the reduced axis.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) outer: usize,
    pub(crate) len: usize,
    pub(crate) inner: usize,
}

fn layout(op: &str, shape: &[usize], axis: usize) -> Layout {
    assert!(
        axis < shape.len(),
        "{op}: axis {axis} out of range for shape {shape:?}"
    );
    Layout {
        outer: shape[..axis].iter().product(),
        len: shape[axis],
        inner: shape[axis + 1..].iter().product(),
    }
}

fn reduced_shape(shape: &[usize], axis: usize, keepdim: bool) -> Shape {
    let mut out = Shape::from_slice(shape);
    if keepdim {
        out[axis] = 1;
    } else {
        out.remove(axis);
    }
    out
}

struct SumBackward {
    l: Layout,
    scale: f64,
}

impl<T: Float> Backward<T> for SumBackward {
    fn name(&self) -> &'static str {
        "sum"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        cpu::sum_backward(g, self.l, self.scale, dst, acc);
    }

    cuda_vjp!(|op, _k, g, dst, acc| crate::cuda::reduce::sum_backward(g, op.l, op.scale, dst, acc));
}

/// Position along the axis of each output's maximum, where the forward kernel left it.
type Argmax = Kept<Vec<u32>, cuda_type!(deq_cuda::IndexBuffer)>;

struct MaxBackward {
    l: Layout,
    argmax: Argmax,
}

impl<T: Float> Backward<T> for MaxBackward {
    fn name(&self) -> &'static str {
        "max"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        cpu::max_backward(g, self.argmax.host("max"), self.l, dst, acc);
    }

    cuda_vjp!(|op, _k, g, dst, acc| {
        crate::cuda::reduce::max_backward(g, op.argmax.cuda("max"), op.l, dst, acc)
    });
}

/// The sum kernel on `x`'s device: `scale · Σ` over the middle axis of `l`.
fn sum<T: Float>(x: &Tensor<T>, l: Layout, scale: f64, out_shape: &[usize]) -> Tensor<T> {
    match x.device() {
        Device::Cpu => {
            let mut out = crate::pool::take_zeroed(l.outer * l.inner);
            cpu::sum(x.data(), l, T::from_f64(scale), &mut out);
            Tensor::from_vec(out, out_shape)
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::reduce::sum(x, l, scale, out_shape)),
    }
}

/// The max kernel on `x`'s device: the maxima over the middle axis of `l` and where they are.
fn max<T: Float>(x: &Tensor<T>, l: Layout, out_shape: &[usize]) -> (Tensor<T>, Argmax) {
    match x.device() {
        Device::Cpu => {
            let mut out = crate::pool::take(l.outer * l.inner);
            let mut argmax = vec![0u32; l.outer * l.inner];
            cpu::max(x.data(), l, &mut out, &mut argmax);
            (Tensor::from_vec(out, out_shape), Kept::Host(argmax))
        }
        Device::Cuda(_) => on_cuda!({
            let (value, argmax) = crate::cuda::reduce::max(x, l, out_shape);
            (value, Kept::Cuda(argmax))
        }),
    }
}

impl<T: Float> Var<T> {
    /// Sum over `axis`, dropping it unless `keepdim`.
    pub fn sum_axis(&self, axis: usize, keepdim: bool) -> Var<T> {
        self.scaled_sum("sum_axis", axis, keepdim, 1.0)
    }

    /// Mean over `axis`, dropping it unless `keepdim`.
    pub fn mean_axis(&self, axis: usize, keepdim: bool) -> Var<T> {
        let len = layout("mean_axis", self.shape(), axis).len;
        self.scaled_sum("mean_axis", axis, keepdim, 1.0 / len.max(1) as f64)
    }

    fn scaled_sum(&self, op: &str, axis: usize, keepdim: bool, scale: f64) -> Var<T> {
        let l = layout(op, self.shape(), axis);
        let value = sum(
            self.value(),
            l,
            scale,
            &reduced_shape(self.shape(), axis, keepdim),
        );
        record(value, &[self], || SumBackward { l, scale })
    }

    /// Sum over several axes (any order, no repeats), dropping them unless `keepdim`.
    pub fn sum_axes(&self, axes: &[usize], keepdim: bool) -> Var<T> {
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            axes.len(),
            "sum_axes: repeated axis in {axes:?} for shape {:?}",
            self.shape()
        );
        let mut out = self.clone();
        for &a in sorted.iter().rev() {
            out = out.sum_axis(a, keepdim);
        }
        out
    }

    /// Mean over several axes, dropping them unless `keepdim`.
    pub fn mean_axes(&self, axes: &[usize], keepdim: bool) -> Var<T> {
        let count: usize = axes.iter().map(|&a| self.shape()[a]).product();
        self.sum_axes(axes, keepdim)
            .mul_scalar(1.0 / count.max(1) as f64)
    }

    /// Sum of every element (a rank-0 result).
    pub fn sum_all(&self) -> Var<T> {
        let l = Layout {
            outer: 1,
            len: self.numel(),
            inner: 1,
        };
        let value = sum(self.value(), l, 1.0, &[]);
        record(value, &[self], || SumBackward { l, scale: 1.0 })
    }

    /// Mean of every element (a rank-0 result).
    pub fn mean_all(&self) -> Var<T> {
        let n = self.numel().max(1);
        let l = Layout {
            outer: 1,
            len: self.numel(),
            inner: 1,
        };
        let scale = 1.0 / n as f64;
        let value = sum(self.value(), l, scale, &[]);
        record(value, &[self], || SumBackward { l, scale })
    }

    /// Maximum over `axis` (gradient to the first maximum), dropping it unless `keepdim`.
    pub fn max_axis(&self, axis: usize, keepdim: bool) -> Var<T> {
        let l = layout("max_axis", self.shape(), axis);
        self.max_layout(l, reduced_shape(self.shape(), axis, keepdim))
    }

    /// Maximum of every element (a rank-0 result).
    pub fn max_all(&self) -> Var<T> {
        let l = Layout {
            outer: 1,
            len: self.numel(),
            inner: 1,
        };
        self.max_layout(l, Shape::new())
    }

    fn max_layout(&self, l: Layout, out_shape: Shape) -> Var<T> {
        assert!(
            l.len > 0,
            "max: cannot reduce an empty axis of {:?}",
            self.shape()
        );
        let (value, argmax) = max(self.value(), l, &out_shape);
        record(value, &[self], || MaxBackward { l, argmax })
    }
}
