//! Strided copies: permute, narrow, concat, pad and their VJPs, all through one kernel
//! (`strided_copy` in strided.cu) that moves `src[offset + Σ i·stride]` to
//! `dst[offset + Σ i·stride]` over an index space, writing or accumulating.

use crate::launch::{launch, linear, Arg, Dims};
use crate::{GpuBuffer, GpuFloat};

/// Row-major strides (in elements) of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// `size` with up to three stride sets, simplified for a kernel walk that enumerates the same
/// positions in the same row-major order: size-1 axes are dropped (they add nothing to any
/// offset) and an axis is merged into its outer neighbour when every stride set is contiguous
/// across the two (`stride[outer] == stride[inner] · size[inner]`). Fewer axes mean fewer
/// divisions per element and lets tensors with more than `MAX_DIMS` axes through when their
/// layout allows. Missing stride sets are zeros. Panics when more than `MAX_DIMS` axes remain.
pub(crate) fn coalesce(size: &[usize], sets: [&[usize]; 3]) -> Dims {
    let mut sz: Vec<usize> = Vec::with_capacity(size.len());
    let mut st: [Vec<usize>; 3] = Default::default();
    for (ax, &n) in size.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let s = |k: usize| sets[k].get(ax).copied().unwrap_or(0);
        let merge = match sz.last() {
            Some(_) => (0..3).all(|k| st[k].last().copied() == Some(s(k) * n)),
            None => false,
        };
        if merge {
            *sz.last_mut().expect("an axis to merge into") *= n;
            for (k, set) in st.iter_mut().enumerate() {
                *set.last_mut().expect("a stride to merge into") = s(k);
            }
        } else {
            sz.push(n);
            for (k, set) in st.iter_mut().enumerate() {
                set.push(s(k));
            }
        }
    }
    Dims::new(&sz, &st[0], &st[1], &st[2])
}

/// One side of a strided copy: where index 0 lies and the stride of each axis, in elements.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    /// Position of index `(0, …, 0)`.
    pub offset: usize,
    /// Stride of each axis of the copy's index space.
    pub strides: &'a [usize],
}

impl Strided<'_> {
    /// One past the last position this side touches over `size` (which has no zero extent).
    fn end(&self, size: &[usize]) -> usize {
        self.offset
            + size
                .iter()
                .zip(self.strides)
                .map(|(&n, &s)| (n - 1) * s)
                .sum::<usize>()
            + 1
    }
}

/// `dst[dst_at.offset + Σ i·dst_at.strides] (+)= src[src_at.offset + Σ i·src_at.strides]` for
/// every index `i` over `size`: writes when `acc` is false, adds when true.
///
/// The destination positions must be distinct (an injective map, as every shape op is).
/// Panics, naming `op`, when a side reaches outside its buffer or has the wrong number of
/// strides.
pub fn strided_copy<T: GpuFloat>(
    op: &str,
    size: &[usize],
    src: &GpuBuffer<T>,
    src_at: Strided<'_>,
    dst: &mut GpuBuffer<T>,
    dst_at: Strided<'_>,
    acc: bool,
) {
    for (side, at, len) in [
        ("source", &src_at, src.len()),
        ("destination", &dst_at, dst.len()),
    ] {
        assert_eq!(
            at.strides.len(),
            size.len(),
            "{op}: {side} strides {:?} for a copy over {size:?}",
            at.strides
        );
        let numel: usize = size.iter().product();
        assert!(
            numel == 0 || at.end(size) <= len,
            "{op}: {side} offset {} strides {:?} over {size:?} reach past its {len} values",
            at.offset,
            at.strides
        );
    }
    let n: usize = size.iter().product();
    if n == 0 {
        return;
    }
    let dims = coalesce(size, [src_at.strides, &[], dst_at.strides]);
    launch::<T>(
        src.gpu(),
        "strided_copy",
        linear(n),
        &[
            Arg::Ptr(src.ptr()),
            Arg::len(src_at.offset),
            Arg::Ptr(dst.ptr()),
            Arg::len(dst_at.offset),
            Arg::len(n),
            Arg::Dims(Box::new(dims)),
            Arg::flag(acc),
        ],
    );
}

/// A window `[start, start + size)` of the middle axis of a contiguous `[outer, total, inner]`
/// tensor: what `narrow` takes, and where `concat` and `pad` place an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Product of the axes before the windowed one.
    pub outer: usize,
    /// Product of the axes after it.
    pub inner: usize,
    /// Extent of the windowed axis in the large tensor.
    pub total: usize,
    /// First entry of the window.
    pub start: usize,
    /// Entries in the window.
    pub size: usize,
}

impl Window {
    fn check(&self, op: &str) {
        assert!(
            self.start + self.size <= self.total,
            "{op}: window {}..{} of an axis of {}",
            self.start,
            self.start + self.size,
            self.total
        );
    }

    /// Index space and strides of the large (windowed) side and of the small contiguous side.
    fn sides(&self) -> ([usize; 2], [usize; 2], [usize; 2]) {
        let size = [self.outer, self.size * self.inner];
        let large = [self.total * self.inner, 1];
        let small = [self.size * self.inner, 1];
        (size, large, small)
    }
}

/// `dst (+)= src[window]`: copies the window of `src` (`[outer, total, inner]`) into the
/// contiguous `dst` (`[outer, size, inner]`). The forward of `narrow`, the VJP of `concat`/`pad`.
pub fn read_window<T: GpuFloat>(src: &GpuBuffer<T>, w: Window, dst: &mut GpuBuffer<T>, acc: bool) {
    w.check("read_window");
    let (size, large, small) = w.sides();
    let src_at = Strided {
        offset: w.start * w.inner,
        strides: &large,
    };
    let dst_at = Strided {
        offset: 0,
        strides: &small,
    };
    strided_copy("read_window", &size, src, src_at, dst, dst_at, acc);
}

/// `dst[window] (+)= src`: copies the contiguous `src` (`[outer, size, inner]`) into the window
/// of `dst` (`[outer, total, inner]`), leaving the rest of `dst` as it is. The forward of
/// `concat`/`pad`, the VJP of `narrow`.
pub fn write_window<T: GpuFloat>(src: &GpuBuffer<T>, dst: &mut GpuBuffer<T>, w: Window, acc: bool) {
    w.check("write_window");
    let (size, large, small) = w.sides();
    let src_at = Strided {
        offset: 0,
        strides: &small,
    };
    let dst_at = Strided {
        offset: w.start * w.inner,
        strides: &large,
    };
    strided_copy("write_window", &size, src, src_at, dst, dst_at, acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_strides_are_row_major() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn coalesce_merges_contiguous_axes_and_drops_ones() {
        // A contiguous [2, 1, 3, 4] copy is one axis of 24.
        let s = contiguous_strides(&[2, 1, 3, 4]);
        let d = coalesce(&[2, 1, 3, 4], [&s, &[], &s]);
        assert_eq!(d.ndim, 1);
        assert_eq!((d.size[0], d.stride_a[0], d.stride_c[0]), (24, 1, 1));
        // A transpose of the last two axes keeps them apart.
        let d = coalesce(&[2, 4, 3], [&[12, 1, 4], &[], &[12, 3, 1]]);
        assert_eq!(d.ndim, 3);
        // Broadcasting: b is broadcast over the first two axes, which merge; a is not.
        let d = coalesce(&[5, 6, 7], [&[42, 7, 1], &[0, 0, 1], &[42, 7, 1]]);
        assert_eq!(d.ndim, 2);
        assert_eq!(&d.size[..2], &[30, 7]);
        assert_eq!(&d.stride_b[..2], &[0, 1]);
        // A scalar walk has no axes.
        assert_eq!(coalesce(&[1, 1], [&[1, 1], &[], &[]]).ndim, 0);
    }

    #[test]
    fn window_sides_cover_the_window() {
        let w = Window {
            outer: 3,
            inner: 5,
            total: 7,
            start: 2,
            size: 4,
        };
        let (size, large, small) = w.sides();
        assert_eq!(size, [3, 20]);
        assert_eq!(large, [35, 1]);
        assert_eq!(small, [20, 1]);
        let at = Strided {
            offset: w.start * w.inner,
            strides: &large,
        };
        // Last element: outer 2, window end (2 + 4) · 5 = 30 → 70 + 30 = 100 ≤ 105.
        assert_eq!(at.end(&size), 2 * 35 + 10 + 19 + 1);
    }
}
