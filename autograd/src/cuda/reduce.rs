//! Axis sums and maxima on a CUDA device ([`crate::ops::reduce`]).

use crate::device::buf;
use crate::float::Float;
use crate::ops::reduce::Layout;
use crate::tensor::Tensor;
use deq_cuda::ops::reduce::{self as gpu, AxisLayout};
use deq_cuda::{GpuBuffer, IndexBuffer};

fn axis(l: Layout) -> AxisLayout {
    AxisLayout {
        outer: l.outer,
        len: l.len,
        inner: l.inner,
    }
}

/// `scale · Σ` over the middle axis of `l`, shaped `out_shape`.
pub(crate) fn sum<T: Float>(
    x: &Tensor<T>,
    l: Layout,
    scale: f64,
    out_shape: &[usize],
) -> Tensor<T> {
    Tensor::from_gpu(gpu::sum_axis(buf("sum", x), axis(l), scale), out_shape)
}

/// `dst[o, l, i] (+)= scale · g[o, i]`.
pub(crate) fn sum_backward<T: Float>(
    g: &GpuBuffer<T>,
    l: Layout,
    scale: f64,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::sum_axis_backward(g, axis(l), scale, dst, acc);
}

/// The maximum over the middle axis of `l` (shaped `out_shape`) and the positions of the
/// first maxima.
pub(crate) fn max<T: Float>(
    x: &Tensor<T>,
    l: Layout,
    out_shape: &[usize],
) -> (Tensor<T>, IndexBuffer) {
    let (out, argmax) = gpu::max_axis(buf("max", x), axis(l));
    (Tensor::from_gpu(out, out_shape), argmax)
}

/// `dst[o, argmax[o, i], i] (+)= g[o, i]`, zeros elsewhere unless accumulating.
pub(crate) fn max_backward<T: Float>(
    g: &GpuBuffer<T>,
    argmax: &IndexBuffer,
    l: Layout,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::max_axis_backward(g, argmax, axis(l), dst, acc);
}
