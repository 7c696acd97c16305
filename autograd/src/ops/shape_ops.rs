//! Ops that move values without arithmetic: reshape, permute/transpose, narrow (slice),
//! concatenation and constant padding. Their VJPs move the gradient back the same way.

use super::broadcast::walk1;
#[cfg(feature = "cuda")]
use crate::device::{common_device, Device};
use crate::float::Float;
use crate::kernels;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

struct ReshapeBackward;

impl<T: Float> Backward<T> for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        kernels::write(dst, g, acc);
    }

    fn vjp_in_place(&self, _k: usize, _g: &mut [T]) -> bool {
        true
    }

    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        _k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        if acc {
            deq_cuda::ops::elementwise::scale_into(g, 1.0, dst, true);
        } else {
            dst.copy_from(g);
        }
    }
}

struct PermuteBackward {
    out: Shape,
    strides: Shape,
}

impl<T: Float> Backward<T> for PermuteBackward {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        if acc {
            walk1(&self.out, &self.strides, |i, ia| dst[ia] += g[i]);
        } else {
            walk1(&self.out, &self.strides, |i, ia| dst[ia] = g[i]);
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
        use deq_cuda::ops::strided::{contiguous_strides, strided_copy, Strided};
        let dense = contiguous_strides(&self.out);
        let from = Strided {
            offset: 0,
            strides: &dense,
        };
        let to = Strided {
            offset: 0,
            strides: &self.strides,
        };
        strided_copy("permute", &self.out, g, from, dst, to, acc);
    }
}

/// Copies of a `[outer, len, inner]` block: a window `[start, start + size)` of the middle axis
/// in a tensor whose middle axis has `total` entries.
#[derive(Clone, Copy)]
struct Window {
    outer: usize,
    inner: usize,
    total: usize,
    start: usize,
    size: usize,
}

impl Window {
    #[cfg(feature = "cuda")]
    fn gpu(self) -> deq_cuda::ops::strided::Window {
        deq_cuda::ops::strided::Window {
            outer: self.outer,
            inner: self.inner,
            total: self.total,
            start: self.start,
            size: self.size,
        }
    }

    fn range(&self, o: usize) -> std::ops::Range<usize> {
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
        kernels::prepare(dst, acc);
        let chunk = self.w.size * self.w.inner;
        for o in 0..self.w.outer {
            let r = self.w.range(o);
            kernels::write(&mut dst[r], &g[o * chunk..(o + 1) * chunk], true);
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
        // As on the CPU: zeros first unless accumulating, then add g into the window.
        if !acc {
            dst.fill_zero();
        }
        deq_cuda::ops::strided::write_window(g, dst, self.w.gpu(), true);
    }
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
        let w = self.windows[k];
        let chunk = w.size * w.inner;
        for o in 0..w.outer {
            kernels::write(&mut dst[o * chunk..(o + 1) * chunk], &g[w.range(o)], acc);
        }
    }

    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        deq_cuda::ops::strided::read_window(g, self.windows[k].gpu(), dst, acc);
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
        #[cfg(feature = "cuda")]
        if let Some(x) = self.value().gpu() {
            use deq_cuda::ops::strided::{contiguous_strides, strided_copy, Strided};
            let mut y = x.gpu().alloc::<T>(x.len());
            let dense = contiguous_strides(&out);
            let from = Strided {
                offset: 0,
                strides: &strides,
            };
            let to = Strided {
                offset: 0,
                strides: &dense,
            };
            strided_copy("permute", &out, x, from, &mut y, to, false);
            let value = Tensor::from_gpu(y, &out);
            return record(value, &[self], || PermuteBackward { out, strides });
        }
        let x = self.value().data();
        let mut values = crate::pool::take(x.len());
        walk1(&out, &strides, |i, ia| values[i] = x[ia]);
        let value = Tensor::from_vec(values, &out);
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
        #[cfg(feature = "cuda")]
        if let Some(x) = self.value().gpu() {
            let mut y = x.gpu().alloc::<T>(w.outer * len * w.inner);
            deq_cuda::ops::strided::read_window(x, w.gpu(), &mut y, false);
            let value = Tensor::from_gpu(y, &out);
            return record(value, &[self], || NarrowBackward { w });
        }
        let x = self.value().data();
        let chunk = len * w.inner;
        let mut values = crate::pool::take(w.outer * chunk);
        for o in 0..w.outer {
            values[o * chunk..(o + 1) * chunk].copy_from_slice(&x[w.range(o)]);
        }
        record(Tensor::from_vec(values, &out), &[self], || NarrowBackward {
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
        #[cfg(feature = "cuda")]
        {
            let values: Vec<&Tensor<T>> = parts.iter().map(|p| p.value()).collect();
            if common_device("concat", &values) != Device::Cpu {
                let gpu = values[0].gpu().expect("concat: a cuda tensor").gpu();
                let mut y = gpu.alloc::<T>(outer * total * inner);
                for (v, w) in values.iter().zip(&windows) {
                    let x = crate::device::buf("concat", v);
                    deq_cuda::ops::strided::write_window(x, &mut y, w.gpu(), false);
                }
                let value = Tensor::from_gpu(y, &out);
                return record(value, parts, || PlaceBackward { windows });
            }
        }
        let mut values = crate::pool::take_zeroed(outer * total * inner);
        for (p, w) in parts.iter().zip(&windows) {
            let x = p.value().data();
            let chunk = w.size * inner;
            for o in 0..outer {
                values[w.range(o)].copy_from_slice(&x[o * chunk..(o + 1) * chunk]);
            }
        }
        record(Tensor::from_vec(values, &out), parts, || PlaceBackward {
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
        #[cfg(feature = "cuda")]
        if let Some(x) = self.value().gpu() {
            let mut y = x.gpu().alloc::<T>(w.outer * w.total * w.inner);
            deq_cuda::ops::elementwise::fill(&mut y, value);
            deq_cuda::ops::strided::write_window(x, &mut y, w.gpu(), false);
            let value = Tensor::from_gpu(y, &out);
            return record(value, &[self], || PlaceBackward { windows: vec![w] });
        }
        let mut values = vec![T::from_f64(value); w.outer * w.total * w.inner];
        let x = self.value().data();
        let chunk = w.size * w.inner;
        for o in 0..w.outer {
            values[w.range(o)].copy_from_slice(&x[o * chunk..(o + 1) * chunk]);
        }
        record(Tensor::from_vec(values, &out), &[self], || PlaceBackward {
            windows: vec![w],
        })
    }
}
