//! Binary element-wise ops with broadcasting, and their VJPs reduced over broadcast axes.
//!
//! Shapes follow NumPy: the caller passes both operand shapes and the broadcast output shape;
//! an operand's axes align on the right and have the output's extent or 1 (stride 0, read
//! again at every position of that axis). The VJP of an operand sums the partials over the
//! axes it was broadcast along, one destination element at a time (no atomics, so the result
//! is the same on every run).

use super::reduce::{blocks, split};
use super::strided::{coalesce, contiguous_strides};
use crate::launch::{launch, linear, row_threads, Arg, Dims};
use crate::{GpuBuffer, GpuFloat};

/// The arithmetic of a binary op (codes shared with broadcast.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
}

impl BinaryKind {
    fn code(self) -> i32 {
        match self {
            BinaryKind::Add => 0,
            BinaryKind::Sub => 1,
            BinaryKind::Mul => 2,
            BinaryKind::Div => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BinaryKind::Add => "add",
            BinaryKind::Sub => "sub",
            BinaryKind::Mul => "mul",
            BinaryKind::Div => "div",
        }
    }
}

/// Strides of a contiguous `input` seen through the broadcast shape `out`: 0 on the axes
/// `input` lacks or has as 1 where `out` does not. Panics, naming `op`, when `input` does not
/// broadcast to `out`.
pub fn broadcast_strides(op: &str, input: &[usize], out: &[usize]) -> Vec<usize> {
    let fits = input.len() <= out.len()
        && input
            .iter()
            .rev()
            .zip(out.iter().rev())
            .all(|(&i, &o)| i == o || i == 1);
    assert!(fits, "{op}: shape {input:?} does not broadcast to {out:?}");
    let own = contiguous_strides(input);
    let lead = out.len() - input.len();
    (0..out.len())
        .map(|ax| match ax.checked_sub(lead) {
            Some(d) if input[d] == out[ax] => own[d],
            _ => 0,
        })
        .collect()
}

/// Checks the buffers against their shapes and returns the operands' broadcast strides.
fn operands<T: GpuFloat>(
    op: &str,
    a: (&GpuBuffer<T>, &[usize]),
    b: (&GpuBuffer<T>, &[usize]),
    out: &[usize],
) -> (Vec<usize>, Vec<usize>) {
    for (name, (buf, shape)) in [("a", a), ("b", b)] {
        let numel: usize = shape.iter().product();
        assert_eq!(
            buf.len(),
            numel,
            "{op}: operand {name} has {} values for shape {shape:?}",
            buf.len()
        );
    }
    let sa = broadcast_strides(op, a.1, out);
    let sb = broadcast_strides(op, b.1, out);
    (sa, sb)
}

/// `a op b` with broadcasting into a new contiguous buffer of shape `out`.
///
/// `a_shape` and `b_shape` are the operands' shapes; `out` their broadcast shape. Panics when
/// a buffer's length differs from its shape or an operand does not broadcast to `out`.
pub fn binary<T: GpuFloat>(
    kind: BinaryKind,
    a: &GpuBuffer<T>,
    a_shape: &[usize],
    b: &GpuBuffer<T>,
    b_shape: &[usize],
    out: &[usize],
) -> GpuBuffer<T> {
    let (sa, sb) = operands(kind.name(), (a, a_shape), (b, b_shape), out);
    let n: usize = out.iter().product();
    let y = a.gpu().alloc::<T>(n);
    if n == 0 {
        return y;
    }
    let dims = coalesce(out, [&sa, &sb, &[]]);
    launch::<T>(
        a.gpu(),
        "broadcast_fwd",
        linear(n),
        &[
            Arg::I32(kind.code()),
            Arg::Ptr(a.ptr()),
            Arg::Ptr(b.ptr()),
            Arg::Ptr(y.ptr()),
            Arg::len(n),
            Arg::Dims(Box::new(dims)),
        ],
    );
    y
}

/// The output axes split for the VJP of one operand: `kept` enumerates the destination
/// (the operand's own non-1 axes, in order, so its linear index is the operand's flat index)
/// and `red` the positions summed into each destination element (the axes the operand was
/// broadcast along). Stride sets: a, b, and the cotangent (contiguous over `out`).
struct Split {
    kept: Dims,
    red: Dims,
    red_len: usize,
    /// The innermost non-1 output axis is a reduced one.
    inner_reduced: bool,
}

fn split_axes(out: &[usize], sa: &[usize], sb: &[usize], target: &[usize]) -> Split {
    let sg = contiguous_strides(out);
    let mut kept: [Vec<usize>; 4] = Default::default();
    let mut red: [Vec<usize>; 4] = Default::default();
    let mut inner_reduced = false;
    for ax in 0..out.len() {
        if out[ax] == 1 {
            continue;
        }
        inner_reduced = target[ax] == 0;
        let side = if inner_reduced { &mut red } else { &mut kept };
        for (set, v) in side.iter_mut().zip([out[ax], sa[ax], sb[ax], sg[ax]]) {
            set.push(v);
        }
    }
    let red_len = red[0].iter().product();
    Split {
        kept: coalesce(&kept[0], [&kept[1], &kept[2], &kept[3]]),
        red: coalesce(&red[0], [&red[1], &red[2], &red[3]]),
        red_len,
        inner_reduced,
    }
}

/// Reduced lengths from which an innermost reduced axis gets a block per destination element.
const ROW_MIN: usize = 64;
/// Threads the chunked column kernel aims for, and its shortest chunk.
const COL_TARGET: usize = 1 << 16;
const COL_MIN_CHUNK: usize = 64;

/// VJP of [`binary`] for input `k` (0: a, 1: b): `dst (+)= Σ g · ∂(a op b)/∂input_k` summed
/// over the axes along which that input was broadcast; `dst` has the input's element count.
/// Writes when `acc` is false, adds when true.
#[allow(clippy::too_many_arguments)]
pub fn binary_backward<T: GpuFloat>(
    kind: BinaryKind,
    k: usize,
    g: &GpuBuffer<T>,
    a: (&GpuBuffer<T>, &[usize]),
    b: (&GpuBuffer<T>, &[usize]),
    out: &[usize],
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    let op = kind.name();
    assert!(k < 2, "{op}: input {k} of a binary op");
    let (sa, sb) = operands(op, a, b, out);
    let n_out: usize = out.iter().product();
    assert_eq!(
        g.len(),
        n_out,
        "{op}: cotangent of {} values for output shape {out:?}",
        g.len()
    );
    let (target, target_shape) = if k == 0 { (&sa, a.1) } else { (&sb, b.1) };
    let n_dst: usize = target_shape.iter().product();
    assert_eq!(
        dst.len(),
        n_dst,
        "{op}: gradient buffer of {} values for input shape {target_shape:?}",
        dst.len()
    );
    if n_dst == 0 {
        return;
    }
    let s = split_axes(out, &sa, &sb, target);
    let common = |dst: &GpuBuffer<T>| {
        vec![
            Arg::I32(kind.code()),
            Arg::I32(k as i32),
            Arg::Ptr(g.ptr()),
            Arg::Ptr(a.0.ptr()),
            Arg::Ptr(b.0.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(n_dst),
        ]
    };
    let gpu = g.gpu();
    if s.inner_reduced && s.red_len >= ROW_MIN {
        let mut args = common(dst);
        args.extend([
            Arg::len(s.red_len),
            Arg::Dims(Box::new(s.kept)),
            Arg::Dims(Box::new(s.red)),
            Arg::flag(acc),
        ]);
        let cfg = blocks(n_dst, row_threads(s.red_len));
        launch::<T>(gpu, "broadcast_bwd_rows", cfg, &args);
        return;
    }
    let (n_chunks, chunk) = split(n_dst, s.red_len, COL_TARGET, COL_MIN_CHUNK);
    let cols = |out: &GpuBuffer<T>, acc: bool| {
        let mut args = common(out);
        args.extend([
            Arg::len(n_chunks),
            Arg::len(chunk),
            Arg::len(s.red_len),
            Arg::Dims(Box::new(s.kept)),
            Arg::Dims(Box::new(s.red)),
            Arg::flag(acc),
        ]);
        launch::<T>(gpu, "broadcast_bwd_cols", linear(n_dst * n_chunks), &args);
    };
    if n_chunks == 1 {
        cols(&*dst, acc);
        return;
    }
    let part = gpu.alloc::<T>(n_chunks * n_dst);
    cols(&part, false);
    launch::<T>(
        gpu,
        "broadcast_sum_chunks",
        linear(n_dst),
        &[
            Arg::Ptr(part.ptr()),
            Arg::len(n_chunks),
            Arg::len(n_dst),
            Arg::Ptr(dst.ptr()),
            Arg::flag(acc),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_strides_zero_the_broadcast_axes() {
        assert_eq!(
            broadcast_strides("t", &[3, 1, 5], &[3, 4, 5]),
            vec![5, 0, 1]
        );
        assert_eq!(broadcast_strides("t", &[5], &[3, 4, 5]), vec![0, 0, 1]);
        assert_eq!(broadcast_strides("t", &[], &[2, 2]), vec![0, 0]);
        assert_eq!(broadcast_strides("t", &[1, 1], &[1, 1]), vec![1, 1]);
    }

    #[test]
    #[should_panic(expected = "does not broadcast")]
    fn incompatible_shapes_panic() {
        broadcast_strides("t", &[3, 2], &[3, 4]);
    }

    #[test]
    fn split_axes_separates_kept_and_reduced_axes() {
        // b of [3, 1, 5] against out [2, 3, 4, 5]: kept (3, 5), reduced (2, 4).
        let out = [2, 3, 4, 5];
        let sa = broadcast_strides("t", &out, &out);
        let sb = broadcast_strides("t", &[3, 1, 5], &out);
        let s = split_axes(&out, &sa, &sb, &sb);
        assert_eq!(s.kept.ndim, 2);
        assert_eq!(&s.kept.size[..2], &[3, 5]);
        assert_eq!(&s.kept.stride_b[..2], &[5, 1]);
        assert_eq!(&s.kept.stride_c[..2], &[20, 1]);
        assert_eq!(s.red_len, 8);
        assert_eq!(&s.red.size[..2], &[2, 4]);
        assert_eq!(&s.red.stride_c[..2], &[60, 5]);
        assert!(!s.inner_reduced);
        // A per-row scalar [2, 3, 1, 1] is reduced along the innermost axes, which merge.
        let sb = broadcast_strides("t", &[2, 3, 1, 1], &out);
        let s = split_axes(&out, &sa, &sb, &sb);
        assert!(s.inner_reduced);
        assert_eq!((s.kept.ndim, s.kept.size[0]), (1, 6));
        assert_eq!((s.red.ndim, s.red.size[0], s.red_len), (1, 20, 20));
        // Same shapes: nothing reduced.
        let s = split_axes(&out, &sa, &sa, &sa);
        assert_eq!((s.red.ndim, s.red_len), (0, 1));
        assert_eq!(s.kept.ndim, 1);
    }
}
