//! Shared helpers of the gradient property tests (`grad_*.rs`): proptest strategies for shapes,
//! broadcast pairs and values where each op is smooth, and a gradcheck assertion.
//!
//! Every property runs [`CASES`] random cases and checks the op's VJP against central finite
//! differences in f64 with [`deq_autograd::gradcheck`] at a relative tolerance of [`TOLERANCE`].
//! The random cotangent of each case is drawn from the case's own seed, and every check runs
//! twice: once as written and once with the inputs also used by a later op, so both the
//! replacing and the accumulating branch of each VJP are exercised.
//!
//! Conditioning. Central differences in f64 carry an absolute round-off of about `1e-10` times
//! the size of the output, so an input whose VJP is tiny through cancellation for the drawn
//! cotangent (a one-element input whose gradient `Σ_j u_j ∂y_j/∂x` nearly cancels, a softmax
//! row of two with `u₁ ≈ u₂`) cannot be checked to a relative `1e-6` against its own tiny
//! gradient. Such inputs turn up about once in a few thousand cases (measured with soak runs),
//! which would make the suite flaky. So a case that fails [`gradcheck`] with one cotangent is
//! checked with a second, independent one, and passes only when the second check passes
//! outright and, for every input, the first check's gradients are finite and its largest error
//! is within [`TOLERANCE`] of the input's gradient scale under the two cotangents. A wrong VJP
//! has errors of the order of the gradient under any cotangent and still fails; a cancellation
//! under both cotangents at once is as likely as the square of a single one.
//!
//! Every retry is reported: a `gradcheck retry:` line on stderr names the op, the case's seed,
//! the input and its errors under the first cotangent (shown with `--nocapture`, and with the
//! output of a failing test). `grad_controls.rs` holds the negative controls: wrong VJPs (a
//! scaled gradient, one wrong element, a VJP that overwrites instead of accumulating) fail,
//! and so does a wrong VJP on a case that needs the retry, where the right one passes with a
//! reported retry.

#![allow(dead_code)]

use deq_autograd::{gradcheck, GradcheckOptions, Rng, Tensor, Var};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::ops::RangeInclusive;

/// Cases per property (the acceptance floor is 64). `PROPTEST_CASES` may raise it for a soak
/// run (`PROPTEST_CASES=10000 cargo test --release -p deq-autograd --test grad_nn`), never
/// lower it.
pub const CASES: u32 = 64;

/// Largest accepted norm-wise relative error between the VJP and finite differences.
pub const TOLERANCE: f64 = 1e-6;

/// The proptest configuration of every gradient property: [`CASES`] cases or more.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(CASES, |n| n.max(CASES));
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// How a [`check_grad_outcome`] case passed.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Both checks passed with the case's cotangent.
    Passed,
    /// A check failed with the case's cotangent through cancellation and passed with the
    /// second one (module docs); the message says which check and input, and by how much.
    PassedOnRetry(String),
}

/// Runs [`gradcheck`] of `f` at `inputs` (cotangent drawn from `seed`) and fails the case,
/// printing the report, unless every input's relative error is within [`TOLERANCE`] (with
/// the second-cotangent rule of the module docs for inputs whose gradient cancels). A retry
/// is reported on stderr.
///
/// Two checks run: `f` alone, where the op's VJP writes each input's gradient buffer first
/// (the replace path), and `f` with every input also used by a later op, so that the reverse
/// sweep reaches the op second and its VJP must add to the buffer (the accumulate path).
pub fn check_grad(
    op: &str,
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    inputs: &[Tensor<f64>],
    seed: u64,
) -> Result<(), TestCaseError> {
    if let Outcome::PassedOnRetry(why) = check_grad_outcome(op, f, inputs, seed)? {
        eprintln!("gradcheck retry: {why}");
    }
    Ok(())
}

/// [`check_grad`], saying whether the second cotangent was needed (and not printing it).
pub fn check_grad_outcome(
    op: &str,
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    inputs: &[Tensor<f64>],
    seed: u64,
) -> Result<Outcome, TestCaseError> {
    let first = check_once(op, "", &f, inputs, seed)?;
    let second = check_once(
        op,
        " (inputs also used by a later op: accumulating VJP)",
        |v| also_used_later(&f, v),
        inputs,
        seed,
    )?;
    Ok(match (first, second) {
        (Outcome::Passed, Outcome::Passed) => Outcome::Passed,
        (Outcome::PassedOnRetry(a), Outcome::PassedOnRetry(b)) => {
            Outcome::PassedOnRetry(format!("{a}; {b}"))
        }
        (Outcome::PassedOnRetry(a), _) | (_, Outcome::PassedOnRetry(a)) => {
            Outcome::PassedOnRetry(a)
        }
    })
}

/// Checks the output shape of `f` on constant inputs, then [`check_grad`].
pub fn check_shaped(
    op: &str,
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    inputs: Vec<Tensor<f64>>,
    expected_shape: &[usize],
    seed: u64,
) -> Result<(), TestCaseError> {
    let consts: Vec<Var<f64>> = inputs.iter().cloned().map(Var::constant).collect();
    let y = f(&consts);
    prop_assert_eq!(y.shape(), expected_shape, "{} output shape", op);
    check_grad(op, f, &inputs, seed)
}

fn check_once(
    op: &str,
    variant: &str,
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    inputs: &[Tensor<f64>],
    seed: u64,
) -> Result<Outcome, TestCaseError> {
    let report = gradcheck(&f, inputs, &options(seed));
    if report.passed() {
        return Ok(Outcome::Passed);
    }
    // A failure through cancellation under this cotangent: see the module docs.
    let second = gradcheck(&f, inputs, &options(Rng::new(seed).next_u64()));
    let within_scale = report.inputs.iter().zip(&second.inputs).all(|(a, b)| {
        // `passed` is false for non-finite gradients even when the error looks small.
        let finite = a.passed || a.max_rel_error > TOLERANCE;
        finite && a.max_abs_error <= TOLERANCE * a.scale.max(b.scale)
    });
    let shapes: Vec<&[usize]> = inputs.iter().map(|x| x.shape()).collect();
    prop_assert!(
        second.passed() && within_scale,
        "{op}{variant}: VJP disagrees with central differences for inputs of shapes \
         {shapes:?}\n{report}second cotangent:\n{second}"
    );
    let failed: Vec<String> = report
        .inputs
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            format!(
                "input {} {:?}: relative error {:.1e} (absolute {:.1e} on a gradient of scale \
                 {:.1e})",
                r.index, r.shape, r.max_rel_error, r.max_abs_error, r.scale
            )
        })
        .collect();
    Ok(Outcome::PassedOnRetry(format!(
        "{op}{variant}, seed {seed}, shapes {shapes:?}: {} with the first cotangent; the \
         second passed",
        failed.join(", ")
    )))
}

fn options(seed: u64) -> GradcheckOptions {
    GradcheckOptions {
        tolerance: TOLERANCE,
        seed,
        ..GradcheckOptions::default()
    }
}

/// `f(v)` flattened and joined with a scaled copy of every input, recorded after `f`: in the
/// reverse sweep the copies write the inputs' gradient buffers before `f`'s VJP adds to them.
fn also_used_later(f: &impl Fn(&[Var<f64>]) -> Var<f64>, v: &[Var<f64>]) -> Var<f64> {
    let y = f(v);
    let mut parts = vec![y.reshape(&[y.numel()])];
    for (i, x) in v.iter().enumerate() {
        parts.push(x.mul_scalar(0.5 + i as f64).reshape(&[x.numel()]));
    }
    let refs: Vec<&Var<f64>> = parts.iter().collect();
    Var::concat(&refs, 0)
}

/// The seed of a case's random cotangent.
pub fn seed() -> impl Strategy<Value = u64> {
    any::<u64>()
}

/// A dimension size in `1..=4`, size 1 drawn often (it is the broadcasting edge case).
pub fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(1usize), 3 => 1usize..=4]
}

/// A shape whose rank lies in `ranks`, dims from [`dim`].
pub fn shape(ranks: RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    vec(dim(), ranks)
}

/// A tensor of the given shape with values drawn from `value`.
pub fn tensor_of(
    shape: Vec<usize>,
    value: impl Strategy<Value = f64> + Clone,
) -> impl Strategy<Value = Tensor<f64>> {
    let n = shape.iter().product::<usize>();
    vec(value, n).prop_map(move |v| Tensor::from_vec(v, &shape))
}

/// A tensor with a random shape of rank in `ranks` and values uniform in `[lo, hi)`.
pub fn tensor(ranks: RangeInclusive<usize>, lo: f64, hi: f64) -> BoxedStrategy<Tensor<f64>> {
    shape(ranks)
        .prop_flat_map(move |s| tensor_of(s, lo..hi))
        .boxed()
}

/// Values with `lo ≤ |x| < hi` and a random sign: away from zero (kinks, poles).
pub fn away_from_zero(lo: f64, hi: f64) -> impl Strategy<Value = f64> + Clone {
    (lo..hi, any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m })
}

/// A tensor of the given shape whose values are pairwise at least `0.09` apart: a random
/// permutation of an evenly spaced grid plus a small jitter, so maxima have no ties and no
/// finite-difference step crosses one.
pub fn distinct_tensor(shape: Vec<usize>) -> impl Strategy<Value = Tensor<f64>> {
    let n = shape.iter().product::<usize>();
    (
        Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        vec(0.0..0.01f64, n),
    )
        .prop_map(move |(perm, jitter)| {
            let values = perm
                .iter()
                .zip(&jitter)
                .map(|(&p, &j)| 0.1 * p as f64 - 0.05 * n as f64 + j)
                .collect();
            Tensor::from_vec(values, &shape)
        })
}

/// A shape that broadcasts to `out`: it may lose some leading dimensions and have any other
/// dimension set to 1.
pub fn broadcastable_to(out: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let r = out.len();
    (
        vec(proptest::bool::weighted(0.35), r),
        prop_oneof![3 => Just(0usize), 1 => 0..=r],
    )
        .prop_map(move |(ones, drop)| {
            out.iter()
                .zip(&ones)
                .skip(drop)
                .map(|(&d, &one)| if one { 1 } else { d })
                .collect()
        })
}

/// Two shapes that broadcast together: both are [`broadcastable_to`] a common random shape,
/// so pairs like `[a, 1, c]` vs `[b, 1]`, `[1, c]` vs `[a, 1]` occur; a quarter of the pairs
/// are equal shapes (the ops' non-broadcasting fast path).
pub fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop_oneof![
        1 => shape(0..=4).prop_map(|s| (s.clone(), s)),
        3 => shape(1..=4)
            .prop_flat_map(|out| (broadcastable_to(out.clone()), broadcastable_to(out))),
    ]
}

/// The broadcast shape of `a` and `b` by NumPy's rules (to check the op's output shape).
pub fn broadcast_of(a: &[usize], b: &[usize]) -> Vec<usize> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let db = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            da.max(db)
        })
        .collect()
}
