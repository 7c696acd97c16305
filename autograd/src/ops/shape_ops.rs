//! Ops that move values without arithmetic: reshape, permute/transpose, narrow (slice),
//! concatenation and constant padding. Their VJPs move the gradient back the same way.

use super::broadcast::walk1;
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
        let x = self.value().data();
        let mut values = vec![T::ZERO; x.len()];
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
        let x = self.value().data();
        let mut values = Vec::with_capacity(w.outer * len * w.inner);
        for o in 0..w.outer {
            values.extend_from_slice(&x[w.range(o)]);
        }
        let mut out = Shape::from_slice(shape);
        out[axis] = len;
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
        let mut values = vec![T::ZERO; outer * total * inner];
        for (p, w) in parts.iter().zip(&windows) {
            let x = p.value().data();
            let chunk = w.size * inner;
            for o in 0..outer {
                values[w.range(o)].copy_from_slice(&x[o * chunk..(o + 1) * chunk]);
            }
        }
        let mut out = Shape::from_slice(first);
        out[axis] = total;
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
        let mut values = vec![T::from_f64(value); w.outer * w.total * w.inner];
        let x = self.value().data();
        let chunk = w.size * w.inner;
        for o in 0..w.outer {
            values[w.range(o)].copy_from_slice(&x[o * chunk..(o + 1) * chunk]);
        }
        let mut out = Shape::from_slice(shape);
        out[axis] = w.total;
        record(Tensor::from_vec(values, &out), &[self], || PlaceBackward {
            windows: vec![w],
        })
    }
}
