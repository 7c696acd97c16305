//! Gradient properties of `matmul` / `matmul_t`: plain 2-D products, batched products over one
//! or two batch dimensions, and batched products whose left or right operand is a single 2-D
//! matrix shared by the batch. Every case checks all four transpose combinations `(ta, tb)`
//! against central finite differences in f64 (relative error ≤ 1e-6), so each code path of the
//! forward product and of both VJPs (including the flattened shared-weight fast paths) is hit.
//! The fused `linear` (`x·Wᵀ + b`) is checked here too.

mod common;

use common::{away_from_zero, check_grad, config, dim, seed, tensor_of};
use deq_autograd::{Tape, Tensor, Var};
use proptest::collection::vec;
use proptest::prelude::*;

/// The stored shape of an operand with logical shape `rows × cols` (after `op`).
fn stored(batch: &[usize], rows: usize, cols: usize, trans: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    if trans {
        s.extend([cols, rows]);
    } else {
        s.extend([rows, cols]);
    }
    s
}

/// One product: batch shapes of both operands, `m × k · k × n`, and the values of both.
#[derive(Debug, Clone)]
struct Case {
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    a: Vec<f64>,
    b: Vec<f64>,
}

/// A case with the given batch shapes of `a` and `b` and random `m, k, n` in `1..=4`.
fn case(a_batch: Vec<usize>, b_batch: Vec<usize>) -> impl Strategy<Value = Case> {
    (dim(), dim(), dim()).prop_flat_map(move |(m, k, n)| {
        let na = a_batch.iter().product::<usize>() * m * k;
        let nb = b_batch.iter().product::<usize>() * k * n;
        let (a_batch, b_batch) = (a_batch.clone(), b_batch.clone());
        (vec(-1.0..1.0f64, na), vec(-1.0..1.0f64, nb)).prop_map(move |(a, b)| Case {
            a_batch: a_batch.clone(),
            b_batch: b_batch.clone(),
            m,
            k,
            n,
            a,
            b,
        })
    })
}

/// Batch dimensions: one or two, each in `1..=3` (size 1 included).
fn batch_dims() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![Just(1usize), 1usize..=3], 1..=2)
}

/// Checks `op(a)·op(b)` for all four `(ta, tb)`: the output shape and both VJPs.
fn check_all_transposes(op: &str, c: &Case, seed: u64) -> Result<(), TestCaseError> {
    let out_batch = if c.a_batch.is_empty() {
        &c.b_batch
    } else {
        &c.a_batch
    };
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a = Tensor::from_vec(c.a.clone(), &stored(&c.a_batch, c.m, c.k, ta));
        let b = Tensor::from_vec(c.b.clone(), &stored(&c.b_batch, c.k, c.n, tb));
        let f = move |v: &[Var<f64>]| {
            if !ta && !tb {
                v[0].matmul(&v[1])
            } else {
                v[0].matmul_t(&v[1], ta, tb)
            }
        };
        let name = format!("{op} (ta = {ta}, tb = {tb})");
        let y = f(&[Var::constant(a.clone()), Var::constant(b.clone())]);
        prop_assert_eq!(
            y.shape(),
            &stored(out_batch, c.m, c.n, false)[..],
            "{} output shape",
            name
        );
        check_grad(&name, f, &[a, b], seed)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// `[m, k] · [k, n]`.
    #[test]
    fn grad_matmul_2d(c in case(vec![], vec![]), seed in seed()) {
        check_all_transposes("matmul 2-D", &c, seed)?;
    }

    /// `[..., m, k] · [..., k, n]` with equal batch dimensions.
    #[test]
    fn grad_batched_matmul(
        c in batch_dims().prop_flat_map(|bd| case(bd.clone(), bd)),
        seed in seed(),
    ) {
        check_all_transposes("batched matmul", &c, seed)?;
    }

    /// `[..., m, k] · [k, n]`: a 2-D right operand shared by the batch (a linear layer).
    #[test]
    fn grad_batched_matmul_shared_rhs(
        c in batch_dims().prop_flat_map(|bd| case(bd, vec![])),
        seed in seed(),
    ) {
        check_all_transposes("batched matmul, shared 2-D rhs", &c, seed)?;
    }

    /// `[m, k] · [..., k, n]`: a 2-D left operand shared by the batch.
    #[test]
    fn grad_batched_matmul_shared_lhs(
        c in batch_dims().prop_flat_map(|bd| case(vec![], bd)),
        seed in seed(),
    ) {
        check_all_transposes("batched matmul, shared 2-D lhs", &c, seed)?;
    }

    /// The fused affine map `x·Wᵀ + b` of a linear layer, `x` of rank 1 to 3, with and
    /// without bias. `x` and `W` keep `|v| ≥ 0.1`: with one input value near zero under a bias
    /// of order 1, the weight gradient would sit below the round-off of the biased output.
    #[test]
    fn grad_linear(
        (x, w, b) in (vec(dim(), 0..=2), dim(), dim()).prop_flat_map(|(mut lead, inp, out)| {
            lead.push(inp);
            (
                tensor_of(lead, away_from_zero(0.1, 1.0)),
                tensor_of(vec![out, inp], away_from_zero(0.1, 1.0)),
                tensor_of(vec![out], -1.0..1.0),
            )
        }),
        seed in seed(),
    ) {
        let mut out = x.shape().to_vec();
        *out.last_mut().unwrap() = w.shape()[0];
        let y = Var::constant(x.clone()).linear(&Var::constant(w.clone()), None);
        prop_assert_eq!(y.shape(), &out[..]);
        check_grad("linear with bias", |v| v[0].linear(&v[1], Some(&v[2])), &[x.clone(), w.clone(), b], seed)?;
        check_grad("linear without bias", |v| v[0].linear(&v[1], None), &[x, w], seed)?;
    }

    /// One variable as both operands (`xᵀ·x` and `x·xᵀ`, plain and batched): the VJPs of
    /// the two positions land in the same buffer, the second accumulating.
    #[test]
    fn grad_matmul_same_operand_twice(
        x in (vec(prop_oneof![Just(1usize), 1usize..=3], 0..=1), dim(), dim())
            .prop_flat_map(|(mut s, r, c)| {
                s.extend([r, c]);
                tensor_of(s, -1.0..1.0)
            }),
        seed in seed(),
    ) {
        for (ta, tb) in [(true, false), (false, true)] {
            check_grad(
                &format!("matmul_t(x, x, {ta}, {tb})"),
                |v| v[0].matmul_t(&v[0], ta, tb),
                std::slice::from_ref(&x),
                seed,
            )?;
        }
    }
}

#[test]
#[should_panic(expected = "matmul: shapes [2, 3] and [4, 5] are not compatible")]
fn matmul_shape_mismatch_panics_with_op_and_shapes() {
    let tape = Tape::<f64>::new();
    let a = tape.leaf(Tensor::zeros(&[2, 3]));
    let b = tape.leaf(Tensor::zeros(&[4, 5]));
    let _ = a.matmul(&b);
}

#[test]
#[should_panic(expected = "matmul: shapes [2, 2, 3] and [3, 3, 4] are not compatible")]
fn batched_matmul_batch_mismatch_panics_with_op_and_shapes() {
    let tape = Tape::<f32>::new();
    let a = tape.leaf(Tensor::zeros(&[2, 2, 3]));
    let b = tape.leaf(Tensor::zeros(&[3, 3, 4]));
    let _ = a.matmul(&b);
}

#[test]
#[should_panic(expected = "matmul: shapes [2, 3]ᵀ and [2, 3]ᵀ are not compatible")]
fn transposed_matmul_shape_mismatch_panics_with_op_and_shapes() {
    let a = Var::constant(Tensor::<f64>::zeros(&[2, 3]));
    let _ = a.matmul_t(&a, true, true);
}
