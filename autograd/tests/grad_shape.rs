//! Gradient properties of the ops that move values: `reshape`, `permute`, `transpose`,
//! `narrow`, `concat` and `pad`, against central finite differences in f64 (relative error
//! ≤ 1e-6). Each property also checks the output shape.

mod common;

use common::{check_shaped, config, dim, seed, shape, tensor_of};
use deq_autograd::{Tensor, Var};
use proptest::collection::vec;
use proptest::prelude::*;

/// Values of every input in this file.
fn values(shape: Vec<usize>) -> impl Strategy<Value = Tensor<f64>> {
    tensor_of(shape, -2.0..2.0)
}

/// A tensor of rank 1 to 4 and one of its axes.
fn with_axis() -> impl Strategy<Value = (Tensor<f64>, usize)> {
    shape(1..=4).prop_flat_map(|s| {
        let r = s.len();
        (values(s), 0..r)
    })
}

/// A tensor and another shape with the same element count: its dimensions shuffled, some
/// neighbours merged, and size-1 dimensions inserted.
fn with_reshape_target() -> impl Strategy<Value = (Tensor<f64>, Vec<usize>)> {
    shape(1..=4).prop_flat_map(|s| {
        let r = s.len();
        (
            values(s.clone()),
            Just(s).prop_shuffle(),
            vec(any::<bool>(), r),
            vec(proptest::bool::weighted(0.25), r + 1),
        )
            .prop_map(move |(x, dims, merge, ones)| {
                let mut target = Vec::new();
                if ones[r] {
                    target.push(1);
                }
                for (i, &d) in dims.iter().enumerate() {
                    match target.last_mut() {
                        Some(last) if i > 0 && merge[i] => *last *= d,
                        _ => target.push(d),
                    }
                    if ones[i] {
                        target.push(1);
                    }
                }
                (x, target)
            })
    })
}

/// The shape after permuting `shape` by `perm`.
fn permuted(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    perm.iter().map(|&p| shape[p]).collect()
}

/// `shape` with dimension `axis` set to `n`.
fn with_dim(shape: &[usize], axis: usize, n: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    s[axis] = n;
    s
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn grad_reshape((x, target) in with_reshape_target(), seed in seed()) {
        check_shaped(
            &format!("reshape {:?} -> {target:?}", x.shape()),
            |v| v[0].reshape(&target),
            vec![x],
            &target,
            seed,
        )?;
    }

    #[test]
    fn grad_permute(
        (x, perm) in shape(1..=4).prop_flat_map(|s| {
            let r = s.len();
            (values(s), Just((0..r).collect::<Vec<usize>>()).prop_shuffle())
        }),
        seed in seed(),
    ) {
        let out = permuted(x.shape(), &perm);
        check_shaped(&format!("permute({perm:?})"), |v| v[0].permute(&perm), vec![x], &out, seed)?;
    }

    /// `transpose(d0, d1)`, `d0 == d1` included (the identity).
    #[test]
    fn grad_transpose(
        (x, d0, d1) in shape(1..=4).prop_flat_map(|s| {
            let r = s.len();
            (values(s), 0..r, 0..r)
        }),
        seed in seed(),
    ) {
        let mut perm: Vec<usize> = (0..x.ndim()).collect();
        perm.swap(d0, d1);
        let out = permuted(x.shape(), &perm);
        check_shaped(
            &format!("transpose({d0}, {d1})"),
            |v| v[0].transpose(d0, d1),
            vec![x],
            &out,
            seed,
        )?;
    }

    /// `narrow(axis, start, len)` for every window with `len ≥ 1`.
    #[test]
    fn grad_narrow(
        (x, axis, start, len) in with_axis().prop_flat_map(|(x, axis)| {
            let n = x.shape()[axis];
            (Just(x), Just(axis), 0..n).prop_flat_map(move |(x, axis, start)| {
                (Just(x), Just(axis), Just(start), 1..=n - start)
            })
        }),
        seed in seed(),
    ) {
        let out = with_dim(x.shape(), axis, len);
        check_shaped(
            &format!("narrow({axis}, {start}, {len})"),
            |v| v[0].narrow(axis, start, len),
            vec![x],
            &out,
            seed,
        )?;
    }

    /// `concat` of 1 to 3 tensors differing along `axis`; when `repeat_first`, the first
    /// tensor is joined a second time at the end (its two VJPs accumulate).
    #[test]
    fn grad_concat(
        (parts, axis) in shape(1..=4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r, vec(dim(), 1..=3)).prop_flat_map(|(s, axis, sizes)| {
                let parts: Vec<_> = sizes.iter().map(|&n| values(with_dim(&s, axis, n))).collect();
                (parts, Just(axis))
            })
        }),
        repeat_first in any::<bool>(),
        seed in seed(),
    ) {
        let mut total: usize = parts.iter().map(|p| p.shape()[axis]).sum();
        if repeat_first {
            total += parts[0].shape()[axis];
        }
        let out = with_dim(parts[0].shape(), axis, total);
        let n = parts.len();
        check_shaped(
            &format!("concat of {n} parts on axis {axis} (first repeated: {repeat_first})"),
            |v| {
                let mut refs: Vec<&Var<f64>> = v.iter().collect();
                if repeat_first {
                    refs.push(&v[0]);
                }
                Var::concat(&refs, axis)
            },
            parts,
            &out,
            seed,
        )?;
    }

    #[test]
    fn grad_pad(
        (x, axis) in with_axis(),
        before in 0usize..=2,
        after in 0usize..=2,
        value in -1.0..1.0f64,
        seed in seed(),
    ) {
        let out = with_dim(x.shape(), axis, x.shape()[axis] + before + after);
        check_shaped(
            &format!("pad({axis}, {before}, {after})"),
            |v| v[0].pad(axis, before, after, value),
            vec![x],
            &out,
            seed,
        )?;
    }
}
