//! Permute, narrow, concat and pad on a CUDA device ([`crate::ops::shape_ops`]), all strided
//! copies (`deq_cuda::ops::strided`).

use crate::device::buf;
use crate::float::Float;
use crate::ops::shape_ops::Window;
use crate::tensor::Tensor;
use crate::var::Var;
use deq_cuda::ops::strided::{self as gpu, contiguous_strides, strided_copy, Strided};
use deq_cuda::GpuBuffer;

fn window(w: Window) -> gpu::Window {
    gpu::Window {
        outer: w.outer,
        inner: w.inner,
        total: w.total,
        start: w.start,
        size: w.size,
    }
}

/// `dst (+)= g`.
pub(crate) fn copy<T: Float>(g: &GpuBuffer<T>, dst: &mut GpuBuffer<T>, acc: bool) {
    if acc {
        deq_cuda::ops::elementwise::scale_into(g, 1.0, dst, true);
    } else {
        dst.copy_from(g);
    }
}

/// The values of `x` read with `strides` over the index space `out`, made contiguous.
pub(crate) fn permute<T: Float>(x: &Tensor<T>, out: &[usize], strides: &[usize]) -> Tensor<T> {
    let x = buf("permute", x);
    let mut y = x.gpu().alloc::<T>(x.len());
    let dense = contiguous_strides(out);
    let from = Strided { offset: 0, strides };
    let to = Strided {
        offset: 0,
        strides: &dense,
    };
    strided_copy("permute", out, x, from, &mut y, to, false);
    Tensor::from_gpu(y, out)
}

/// The VJP of [`permute`]: `g` scattered back through `strides`.
pub(crate) fn permute_backward<T: Float>(
    g: &GpuBuffer<T>,
    out: &[usize],
    strides: &[usize],
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    let dense = contiguous_strides(out);
    let from = Strided {
        offset: 0,
        strides: &dense,
    };
    let to = Strided { offset: 0, strides };
    strided_copy("permute", out, g, from, dst, to, acc);
}

/// The window `w` of `x`, shaped `out`.
pub(crate) fn narrow<T: Float>(x: &Tensor<T>, w: Window, out: &[usize]) -> Tensor<T> {
    let x = buf("narrow", x);
    let mut y = x.gpu().alloc::<T>(w.outer * w.size * w.inner);
    gpu::read_window(x, window(w), &mut y, false);
    Tensor::from_gpu(y, out)
}

/// The VJP of [`narrow`]: as on the CPU, zeros first unless accumulating, then `g` added into
/// the window.
pub(crate) fn narrow_backward<T: Float>(
    g: &GpuBuffer<T>,
    w: Window,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    if !acc {
        dst.fill_zero();
    }
    gpu::write_window(g, dst, window(w), true);
}

/// `parts` placed side by side in their `windows` of a new tensor of shape `out`.
pub(crate) fn concat<T: Float>(parts: &[&Var<T>], windows: &[Window], out: &[usize]) -> Tensor<T> {
    let gpu = buf("concat", parts[0].value()).gpu();
    let w0 = windows[0];
    let mut y = gpu.alloc::<T>(w0.outer * w0.total * w0.inner);
    for (v, w) in parts.iter().zip(windows) {
        let x = buf("concat", v.value());
        gpu::write_window(x, &mut y, window(*w), false);
    }
    Tensor::from_gpu(y, out)
}

/// `x` in the window `w` of a new tensor of shape `out` filled with `value`.
pub(crate) fn pad<T: Float>(x: &Tensor<T>, w: Window, value: f64, out: &[usize]) -> Tensor<T> {
    let x = buf("pad", x);
    let mut y = x.gpu().alloc::<T>(w.outer * w.total * w.inner);
    deq_cuda::ops::elementwise::fill(&mut y, value);
    gpu::write_window(x, &mut y, window(w), false);
    Tensor::from_gpu(y, out)
}

/// `dst (+)= g[w]`: the VJP of placing an input in the window `w` (concat, pad).
pub(crate) fn read_window<T: Float>(
    g: &GpuBuffer<T>,
    w: Window,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::read_window(g, window(w), dst, acc);
}
