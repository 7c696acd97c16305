//! Sums, means and maxima over one axis, several axes, or everything.
//!
//! Each reduction views the input as `[outer, len, inner]` around the reduced axis. The VJP of a
//! sum broadcasts the incoming gradient back over the axis; the VJP of a max sends it to the
//! position of the (first) maximum.

use crate::float::Float;
use crate::kernels;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

#[derive(Clone, Copy)]
struct Layout {
    outer: usize,
    len: usize,
    inner: usize,
}

#[cfg(feature = "cuda")]
impl Layout {
    fn gpu(self) -> deq_cuda::ops::reduce::AxisLayout {
        deq_cuda::ops::reduce::AxisLayout {
            outer: self.outer,
            len: self.len,
            inner: self.inner,
        }
    }
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
        let Layout { outer, len, inner } = self.l;
        let s = T::from_f64(self.scale);
        for o in 0..outer {
            let gi = &g[o * inner..(o + 1) * inner];
            for l in 0..len {
                let d = &mut dst[(o * len + l) * inner..(o * len + l + 1) * inner];
                kernels::map_into(d, gi, |g| g * s, acc);
            }
        }
    }

    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        _k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        deq_cuda::ops::reduce::sum_axis_backward(g, self.l.gpu(), self.scale, dst, acc);
    }
}

struct MaxBackward {
    l: Layout,
    /// Position along the axis of each output's maximum (empty for a cuda recording).
    argmax: Vec<u32>,
    /// The same positions on the device, for a cuda recording.
    #[cfg(feature = "cuda")]
    argmax_gpu: Option<deq_cuda::IndexBuffer>,
}

impl<T: Float> Backward<T> for MaxBackward {
    fn name(&self) -> &'static str {
        "max"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let Layout { len, inner, .. } = self.l;
        kernels::prepare(dst, acc);
        for (j, (&gv, &l)) in g.iter().zip(&self.argmax).enumerate() {
            let (o, i) = (j / inner, j % inner);
            dst[(o * len + l as usize) * inner + i] += gv;
        }
    }

    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        _k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        let argmax = self
            .argmax_gpu
            .as_ref()
            .expect("max: a cuda recording keeps its argmax");
        deq_cuda::ops::reduce::max_axis_backward(g, argmax, self.l.gpu(), dst, acc);
    }
}

fn sum_layout<T: Float>(x: &[T], l: Layout, scale: T) -> Vec<T> {
    let mut out = crate::pool::take_zeroed(l.outer * l.inner);
    for o in 0..l.outer {
        let acc = &mut out[o * l.inner..(o + 1) * l.inner];
        for r in 0..l.len {
            let row = &x[(o * l.len + r) * l.inner..(o * l.len + r + 1) * l.inner];
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
        if scale != T::ONE {
            acc.iter_mut().for_each(|a| *a *= scale);
        }
    }
    out
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
        #[cfg(feature = "cuda")]
        if let Some(x) = self.value().gpu() {
            let out = deq_cuda::ops::reduce::sum_axis(x, l.gpu(), scale);
            let value = Tensor::from_gpu(out, &reduced_shape(self.shape(), axis, keepdim));
            return record(value, &[self], || SumBackward { l, scale });
        }
        let out = sum_layout(self.value().data(), l, T::from_f64(scale));
        let value = Tensor::from_vec(out, &reduced_shape(self.shape(), axis, keepdim));
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
        #[cfg(feature = "cuda")]
        if let Some(x) = self.value().gpu() {
            let value = Tensor::from_gpu(deq_cuda::ops::reduce::sum_axis(x, l.gpu(), 1.0), &[]);
            return record(value, &[self], || SumBackward { l, scale: 1.0 });
        }
        let value = Tensor::from_vec(sum_layout(self.value().data(), l, T::ONE), &[]);
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
        #[cfg(feature = "cuda")]
        if let Some(x) = self.value().gpu() {
            let value = Tensor::from_gpu(deq_cuda::ops::reduce::sum_axis(x, l.gpu(), scale), &[]);
            return record(value, &[self], || SumBackward { l, scale });
        }
        let out = sum_layout(self.value().data(), l, T::from_f64(scale));
        record(Tensor::from_vec(out, &[]), &[self], || SumBackward {
            l,
            scale,
        })
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
        #[cfg(feature = "cuda")]
        if let Some(x) = self.value().gpu() {
            let (out, argmax) = deq_cuda::ops::reduce::max_axis(x, l.gpu());
            let value = Tensor::from_gpu(out, &out_shape);
            return record(value, &[self], || MaxBackward {
                l,
                argmax: Vec::new(),
                argmax_gpu: Some(argmax),
            });
        }
        let x = self.value().data();
        let mut out = crate::pool::take(l.outer * l.inner);
        let mut argmax = vec![0u32; l.outer * l.inner];
        for o in 0..l.outer {
            for i in 0..l.inner {
                let mut best = x[o * l.len * l.inner + i];
                let mut at = 0;
                for r in 1..l.len {
                    let v = x[(o * l.len + r) * l.inner + i];
                    if v > best {
                        best = v;
                        at = r;
                    }
                }
                out[o * l.inner + i] = best;
                argmax[o * l.inner + i] = at as u32;
            }
        }
        record(Tensor::from_vec(out, &out_shape), &[self], || MaxBackward {
            l,
            argmax,
            #[cfg(feature = "cuda")]
            argmax_gpu: None,
        })
    }
}
