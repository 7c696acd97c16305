//! Gradient properties of the reductions: `sum_axis`, `mean_axis`, `sum_axes`, `mean_axes`,
//! `sum_all`, `mean_all`, `max_axis` and `max_all`, with and without `keepdim`, against
//! central finite differences in f64 (relative error ≤ 1e-6). Maxima are checked on inputs
//! without ties (a permuted, jittered grid), where the max is smooth.

mod common;

use common::{check_grad, config, distinct_tensor, seed, shape, tensor, tensor_of};
use deq_autograd::{Tensor, Var};
use proptest::prelude::*;

/// A tensor of rank 1 to 4 and one of its axes.
fn with_axis() -> impl Strategy<Value = (Tensor<f64>, usize)> {
    shape(1..=4).prop_flat_map(|s| {
        let r = s.len();
        (tensor_of(s, -2.0..2.0), 0..r)
    })
}

/// A tensor of rank 1 to 4 and a random subset of its axes (possibly empty) in random order.
fn with_axes() -> impl Strategy<Value = (Tensor<f64>, Vec<usize>)> {
    shape(1..=4).prop_flat_map(|s| {
        let r = s.len();
        (
            tensor_of(s, -2.0..2.0),
            Just((0..r).collect::<Vec<usize>>()).prop_shuffle(),
            0..=r,
        )
            .prop_map(|(x, perm, count)| (x, perm[..count].to_vec()))
    })
}

/// The shape after reducing `axes`.
fn reduced(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    let mut out = Vec::new();
    for (d, &n) in shape.iter().enumerate() {
        if !axes.contains(&d) {
            out.push(n);
        } else if keepdim {
            out.push(1);
        }
    }
    out
}

/// Checks the output shape of `f` on `x` and then its VJP.
fn check_reduction(
    op: &str,
    f: impl Fn(&Var<f64>) -> Var<f64>,
    x: Tensor<f64>,
    expected_shape: &[usize],
    seed: u64,
) -> Result<(), TestCaseError> {
    let y = f(&Var::constant(x.clone()));
    prop_assert_eq!(y.shape(), expected_shape, "{} output shape", op);
    check_grad(op, |v| f(&v[0]), &[x], seed)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn grad_sum_axis((x, axis) in with_axis(), keepdim in any::<bool>(), seed in seed()) {
        let out = reduced(x.shape(), &[axis], keepdim);
        check_reduction("sum_axis", |v| v.sum_axis(axis, keepdim), x, &out, seed)?;
    }

    #[test]
    fn grad_mean_axis((x, axis) in with_axis(), keepdim in any::<bool>(), seed in seed()) {
        let out = reduced(x.shape(), &[axis], keepdim);
        check_reduction("mean_axis", |v| v.mean_axis(axis, keepdim), x, &out, seed)?;
    }

    #[test]
    fn grad_sum_axes((x, axes) in with_axes(), keepdim in any::<bool>(), seed in seed()) {
        let out = reduced(x.shape(), &axes, keepdim);
        check_reduction(
            &format!("sum_axes({axes:?})"),
            |v| v.sum_axes(&axes, keepdim),
            x,
            &out,
            seed,
        )?;
    }

    #[test]
    fn grad_mean_axes((x, axes) in with_axes(), keepdim in any::<bool>(), seed in seed()) {
        let out = reduced(x.shape(), &axes, keepdim);
        check_reduction(
            &format!("mean_axes({axes:?})"),
            |v| v.mean_axes(&axes, keepdim),
            x,
            &out,
            seed,
        )?;
    }

    #[test]
    fn grad_sum_all(x in tensor(0..=4, -2.0, 2.0), seed in seed()) {
        check_reduction("sum_all", |v| v.sum_all(), x, &[], seed)?;
    }

    #[test]
    fn grad_mean_all(x in tensor(0..=4, -2.0, 2.0), seed in seed()) {
        check_reduction("mean_all", |v| v.mean_all(), x, &[], seed)?;
    }

    /// `max_axis` on values without ties along any axis (every value distinct).
    #[test]
    fn grad_max_axis(
        (x, axis) in shape(1..=4).prop_flat_map(|s| {
            let r = s.len();
            (distinct_tensor(s), 0..r)
        }),
        keepdim in any::<bool>(),
        seed in seed(),
    ) {
        let out = reduced(x.shape(), &[axis], keepdim);
        check_reduction("max_axis", |v| v.max_axis(axis, keepdim), x, &out, seed)?;
    }

    /// `max_all` on values without ties.
    #[test]
    fn grad_max_all(x in shape(0..=4).prop_flat_map(distinct_tensor), seed in seed()) {
        check_reduction("max_all", |v| v.max_all(), x, &[], seed)?;
    }
}
