//! Gradient properties of the element-wise ops: broadcasting `add`/`sub`/`mul`/`div`, `neg`,
//! the scalar ops (`affine`, `add_scalar`, `mul_scalar`) and the unary functions `exp`, `log`,
//! `tanh`, `sigmoid`, `relu`, `gelu`, `sqrt`, `powi`. Each VJP is checked against central
//! finite differences in f64 (relative error ≤ 1e-6) at points where the op is smooth.
//!
//! Also here: controls showing that `gradcheck` fails a deliberately wrong VJP, and the
//! shape-mismatch panic messages of the broadcasting ops.

mod common;

use common::{
    away_from_zero, broadcast_of, broadcast_pair, check_grad, config, seed, shape, tensor_of,
};
use deq_autograd::{custom_op, gradcheck, GradcheckOptions, Tape, Tensor, Var};
use proptest::prelude::*;

/// Two broadcast-compatible tensors: `a` uniform in `[-2, 2)`, `b` from `b_value`.
fn operands(
    b_value: impl Strategy<Value = f64> + Clone + 'static,
) -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>)> {
    broadcast_pair()
        .prop_flat_map(move |(sa, sb)| (tensor_of(sa, -2.0..2.0), tensor_of(sb, b_value.clone())))
}

/// One tensor of rank 0 to 4 with values from `value`.
fn operand(value: impl Strategy<Value = f64> + Clone + 'static) -> BoxedStrategy<Tensor<f64>> {
    shape(0..=4)
        .prop_flat_map(move |s| tensor_of(s, value.clone()))
        .boxed()
}

/// Checks a broadcasting binary op: the output has the broadcast shape and the VJPs of both
/// operands (summed over their broadcast dimensions) match finite differences.
fn check_binary(
    op: &str,
    f: fn(&Var<f64>, &Var<f64>) -> Var<f64>,
    a: Tensor<f64>,
    b: Tensor<f64>,
    seed: u64,
) -> Result<(), TestCaseError> {
    let expected = broadcast_of(a.shape(), b.shape());
    let y = f(&Var::constant(a.clone()), &Var::constant(b.clone()));
    prop_assert_eq!(y.shape(), &expected[..], "{} output shape", op);
    check_grad(op, |v| f(&v[0], &v[1]), &[a, b], seed)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn grad_add_broadcast((a, b) in operands(-2.0..2.0), seed in seed()) {
        check_binary("add", |a, b| a.add(b), a, b, seed)?;
    }

    #[test]
    fn grad_sub_broadcast((a, b) in operands(-2.0..2.0), seed in seed()) {
        check_binary("sub", |a, b| a.sub(b), a, b, seed)?;
    }

    #[test]
    fn grad_mul_broadcast((a, b) in operands(-2.0..2.0), seed in seed()) {
        check_binary("mul", |a, b| a.mul(b), a, b, seed)?;
    }

    #[test]
    fn grad_div_broadcast((a, b) in operands(away_from_zero(0.5, 2.0)), seed in seed()) {
        check_binary("div", |a, b| a.div(b), a, b, seed)?;
    }

    /// The operator forms (`&a + &b`, …) on one variable used as both operands: each VJP
    /// position is visited, the second accumulating.
    #[test]
    fn grad_add_sub_mul_div_same_operand_twice(
        x in operand(away_from_zero(0.5, 2.0)),
        seed in seed(),
    ) {
        check_grad(
            "add/sub/mul/div of x with itself",
            |v| {
                let x = &v[0];
                let s = (x + x) * x.tanh();
                let d = x.exp() / x - x.sigmoid();
                (s * x) + (d * x) - (x * x)
            },
            &[x],
            seed,
        )?;
    }

    #[test]
    fn grad_neg(x in operand(-2.0..2.0), seed in seed()) {
        check_grad("neg", |v| v[0].neg(), std::slice::from_ref(&x), seed)?;
        check_grad("neg (operator)", |v| -&v[0], &[x], seed)?;
    }

    /// `affine` with `|scale| ≥ 0.1`: a tinier scale under a shift of order 1 would put the
    /// gradient below the round-off of the shifted output's finite differences.
    #[test]
    fn grad_affine(
        x in operand(-2.0..2.0),
        scale in away_from_zero(0.1, 3.0),
        shift in -3.0..3.0f64,
        seed in seed(),
    ) {
        check_grad("affine", |v| v[0].affine(scale, shift), &[x], seed)?;
    }

    #[test]
    fn grad_add_scalar(x in operand(-2.0..2.0), c in -3.0..3.0f64, seed in seed()) {
        check_grad("add_scalar", |v| v[0].add_scalar(c), &[x], seed)?;
    }

    #[test]
    fn grad_mul_scalar(x in operand(-2.0..2.0), c in -3.0..3.0f64, seed in seed()) {
        check_grad("mul_scalar", |v| v[0].mul_scalar(c), &[x], seed)?;
    }

    #[test]
    fn grad_exp(x in operand(-3.0..3.0), seed in seed()) {
        check_grad("exp", |v| v[0].exp(), &[x], seed)?;
    }

    /// `log` on positive inputs (`x ≥ 0.1`).
    #[test]
    fn grad_log(x in operand(0.1..5.0), seed in seed()) {
        check_grad("log", |v| v[0].log(), &[x], seed)?;
    }

    #[test]
    fn grad_tanh(x in operand(-3.0..3.0), seed in seed()) {
        check_grad("tanh", |v| v[0].tanh(), &[x], seed)?;
    }

    /// `sigmoid` over both branches of its overflow-free form.
    #[test]
    fn grad_sigmoid(x in operand(-6.0..6.0), seed in seed()) {
        check_grad("sigmoid", |v| v[0].sigmoid(), &[x], seed)?;
    }

    /// `relu` away from its kink (`|x| ≥ 1e-3`, far beyond the finite-difference step).
    #[test]
    fn grad_relu(x in operand(away_from_zero(1e-3, 2.0)), seed in seed()) {
        check_grad("relu", |v| v[0].relu(), &[x], seed)?;
    }

    #[test]
    fn grad_gelu(x in operand(-4.0..4.0), seed in seed()) {
        check_grad("gelu", |v| v[0].gelu(), &[x], seed)?;
    }

    /// `sqrt` on positive inputs (`x ≥ 0.1`).
    #[test]
    fn grad_sqrt(x in operand(0.1..5.0), seed in seed()) {
        check_grad("sqrt", |v| v[0].sqrt(), &[x], seed)?;
    }

    /// `powi` for exponents -3..=5 (0 and 1 included) on `0.3 ≤ |x| < 1.5`.
    #[test]
    fn grad_powi(x in operand(away_from_zero(0.3, 1.5)), n in -3i32..=5, seed in seed()) {
        check_grad(&format!("powi({n})"), |v| v[0].powi(n), &[x], seed)?;
    }
}

/// `y = x²` as a custom op whose VJP claims `∂x = factor·x·g` (correct for `factor = 2`).
fn square_with_vjp_factor(v: &[Var<f64>], factor: f64) -> Var<f64> {
    let x = v[0].value().clone();
    let y = x.map(|t| t * t);
    custom_op(
        y,
        &[&v[0]],
        Box::new(move |g: &Tensor<f64>, needs: &[bool]| {
            assert!(needs[0]);
            let d: Vec<f64> = g
                .data()
                .iter()
                .zip(x.data())
                .map(|(&g, &x)| factor * x * g)
                .collect();
            vec![Some(Tensor::from_vec(d, g.shape()))]
        }),
    )
}

fn control_input() -> Tensor<f64> {
    Tensor::from_vec(vec![0.3, -1.2, 0.7, 2.0, -0.4, 1.1], &[2, 3])
}

fn strict() -> GradcheckOptions {
    GradcheckOptions {
        tolerance: common::TOLERANCE,
        ..GradcheckOptions::default()
    }
}

/// Positive control: the custom op with the right VJP passes.
#[test]
fn gradcheck_passes_a_correct_custom_vjp() {
    let report = gradcheck(
        |v| square_with_vjp_factor(v, 2.0),
        &[control_input()],
        &strict(),
    );
    assert!(report.passed(), "{report}");
    assert!(report.max_rel_error() < 1e-8, "{report}");
}

/// The properties can fail: a custom op with a wrong VJP (`3x` instead of `2x`) is reported.
#[test]
fn gradcheck_detects_a_wrong_custom_vjp() {
    let report = gradcheck(
        |v| square_with_vjp_factor(v, 3.0),
        &[control_input()],
        &strict(),
    );
    assert!(!report.passed(), "a wrong VJP passed:\n{report}");
    assert!(!report.inputs[0].passed);
    assert!(report.max_rel_error() > 0.1, "{report}");
    assert!(report.to_string().contains("FAIL"), "{report}");
}

/// The tolerance has teeth: a VJP off by a relative 1e-5 fails at 1e-6.
#[test]
fn gradcheck_detects_a_slightly_wrong_custom_vjp() {
    let report = gradcheck(
        |v| square_with_vjp_factor(v, 2.0 * (1.0 + 1e-5)),
        &[control_input()],
        &strict(),
    );
    assert!(!report.passed(), "a VJP off by 1e-5 passed:\n{report}");
}

/// A wrong VJP of one input among several fails that input only.
#[test]
fn gradcheck_blames_the_wrong_input() {
    let report = gradcheck(
        |v| square_with_vjp_factor(v, 3.0).mul(&v[1]),
        &[control_input(), control_input()],
        &strict(),
    );
    assert!(!report.inputs[0].passed, "{report}");
    assert!(report.inputs[1].passed, "{report}");
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4, 3] cannot be broadcast together")]
fn add_shape_mismatch_panics_with_op_and_shapes() {
    let tape = Tape::<f64>::new();
    let a = tape.leaf(Tensor::zeros(&[2, 3]));
    let b = tape.leaf(Tensor::zeros(&[4, 3]));
    let _ = a.add(&b);
}

#[test]
#[should_panic(expected = "sub: shapes [2, 1, 3] and [2, 2] cannot be broadcast together")]
fn sub_shape_mismatch_panics_with_op_and_shapes() {
    let tape = Tape::<f64>::new();
    let a = tape.leaf(Tensor::zeros(&[2, 1, 3]));
    let b = tape.leaf(Tensor::zeros(&[2, 2]));
    let _ = a.sub(&b);
}

#[test]
#[should_panic(expected = "mul: shapes [3] and [2, 2] cannot be broadcast together")]
fn mul_shape_mismatch_panics_with_op_and_shapes() {
    let _ = Var::constant(Tensor::<f32>::zeros(&[3])).mul(&Var::constant(Tensor::zeros(&[2, 2])));
}

#[test]
#[should_panic(expected = "div: shapes [4, 5] and [4] cannot be broadcast together")]
fn div_shape_mismatch_panics_with_op_and_shapes() {
    let tape = Tape::<f32>::new();
    let a = tape.leaf(Tensor::ones(&[4, 5]));
    let b = tape.leaf(Tensor::ones(&[4]));
    let _ = &a / &b;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The f32 bulk-kernel `exp` and `tanh` stay within 1e-6 relative of the f64 functions.
    #[test]
    fn fast_f32_exp_and_tanh_match_f64(x in -87.0f32..88.0, small in -2.0f32..2.0) {
        let exact = (x as f64).exp();
        let got = deq_autograd::float::exp_f32(x) as f64;
        prop_assert!(((got - exact) / exact).abs() < 1e-6, "exp({x}) = {got} vs {exact}");
        for v in [x, small, small * 1e-3] {
            let exact = (v as f64).tanh();
            let got = deq_autograd::float::tanh_f32(v) as f64;
            prop_assert!((got - exact).abs() <= 1e-6 * exact.abs().max(1e-30) + 1e-37, "tanh({v}) = {got} vs {exact}");
        }
    }
}
