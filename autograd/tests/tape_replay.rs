//! The tape's contract: replayed VJPs are exact and linear, pruned VJPs skip weight gradients,
//! custom ops and recording switches behave.

use deq_autograd::{
    custom_op, gradcheck, matmul_counters, no_grad, GradcheckOptions, Rng, Tape, Tensor, Var,
};
use proptest::prelude::*;

/// A cell `f(z) = tanh(p)·σ(p) + z` with `p = z·Wᵀ + x·Uᵀ + b`, and its inputs.
struct Cell {
    w: Tensor<f64>,
    u: Tensor<f64>,
    b: Tensor<f64>,
    x: Tensor<f64>,
    z: Tensor<f64>,
}

impl Cell {
    fn new(batch: usize, hidden: usize, input: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        Cell {
            w: Tensor::randn(&[hidden, hidden], 0.3, &mut rng),
            u: Tensor::randn(&[hidden, input], 0.3, &mut rng),
            b: Tensor::randn(&[hidden], 0.1, &mut rng),
            x: Tensor::randn(&[batch, input], 1.0, &mut rng),
            z: Tensor::randn(&[batch, hidden], 1.0, &mut rng),
        }
    }

    /// Records the cell; returns (tape, leaves [z, x, w, u, b], output).
    fn record(&self) -> (Tape<f64>, Vec<Var<f64>>, Var<f64>) {
        let tape = Tape::new();
        let leaves: Vec<Var<f64>> = [&self.z, &self.x, &self.w, &self.u, &self.b]
            .iter()
            .map(|t| tape.leaf((*t).clone()))
            .collect();
        let (z, x, w, u, b) = (&leaves[0], &leaves[1], &leaves[2], &leaves[3], &leaves[4]);
        let pre = z.linear(w, None).add(&x.matmul_t(u, false, true)).add(b);
        let y = pre.tanh().mul(&pre.sigmoid()).add(z);
        (tape, leaves, y)
    }
}

fn bits(t: &Tensor<f64>) -> Vec<u64> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn replayed_vjp_is_bit_identical_to_fresh_recording_1000_times() {
    let cell = Cell::new(3, 5, 4, 1);
    let (tape, leaves, y) = cell.record();
    let wrt: Vec<&Var<f64>> = leaves.iter().collect();
    let mut rng = Rng::new(7);
    for i in 0..1000 {
        let u = Tensor::randn(y.shape(), 1.0, &mut rng);
        // Alternate between the full VJP and the z-only one to exercise two cached plans.
        let replay = if i % 2 == 0 {
            tape.vjp(&[&y], &[&u], &wrt)
        } else {
            tape.vjp(&[&y], &[&u], &wrt[..1])
        };
        let (fresh_tape, fresh_leaves, fresh_y) = cell.record();
        let fresh_wrt: Vec<&Var<f64>> = fresh_leaves.iter().take(replay.len()).collect();
        let fresh = fresh_tape.vjp(&[&fresh_y], &[&u], &fresh_wrt);
        for (a, b) in replay.iter().zip(&fresh) {
            assert_eq!(
                bits(a),
                bits(b),
                "call {i}: replayed VJP differs from a fresh one"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn vjp_is_linear_in_the_cotangent(seed in 0u64..1000, a in -3.0f64..3.0) {
        let cell = Cell::new(2, 4, 3, seed);
        let (tape, leaves, y) = cell.record();
        let wrt: Vec<&Var<f64>> = leaves.iter().collect();
        let mut rng = Rng::new(seed + 1);
        let u = Tensor::randn(y.shape(), 1.0, &mut rng);
        let v = Tensor::randn(y.shape(), 1.0, &mut rng);
        let combo = Tensor::from_fn(y.shape(), |i| a * u.data()[i] + v.data()[i]);
        let g_combo = tape.vjp(&[&y], &[&combo], &wrt);
        let g_u = tape.vjp(&[&y], &[&u], &wrt);
        let g_v = tape.vjp(&[&y], &[&v], &wrt);
        for ((c, gu), gv) in g_combo.iter().zip(&g_u).zip(&g_v) {
            for i in 0..c.numel() {
                let expect = a * gu.data()[i] + gv.data()[i];
                prop_assert!((c.data()[i] - expect).abs() <= 1e-12 * (1.0 + expect.abs()));
            }
        }
    }
}

#[test]
fn z_only_vjp_through_a_linear_layer_skips_the_weight_gradient_product() {
    let mut rng = Rng::new(3);
    let tape = Tape::<f32>::new();
    let z = tape.leaf(Tensor::randn(&[16, 32], 1.0, &mut rng));
    let w = tape.leaf(Tensor::randn(&[32, 32], 0.1, &mut rng));
    let b = tape.leaf(Tensor::randn(&[32], 0.1, &mut rng));
    let w2 = tape.leaf(Tensor::randn(&[32, 32], 0.1, &mut rng));
    let y = z.linear(&w, Some(&b)).tanh().matmul_t(&w2, false, true);
    let u = Tensor::ones(y.shape());

    let (calls0, flops0) = matmul_counters();
    tape.vjp(&[&y], &[&u], &[&z]);
    let (calls1, flops1) = matmul_counters();
    tape.vjp(&[&y], &[&u], &[&z, &w, &b, &w2]);
    let (calls2, flops2) = matmul_counters();

    assert_eq!(
        calls1 - calls0,
        2,
        "z-only VJP: one ∂input product per layer"
    );
    assert_eq!(calls2 - calls1, 4, "full VJP: ∂input and ∂weight per layer");
    assert_eq!(flops2 - flops1, 2 * (flops1 - flops0));
}

#[test]
fn vjp_wrt_an_unused_variable_is_zero() {
    let tape = Tape::<f64>::new();
    let a = tape.leaf(Tensor::from_vec(vec![1.0, 2.0], &[2]));
    let unused = tape.leaf(Tensor::from_vec(vec![5.0, 6.0, 7.0], &[3]));
    let y = a.exp();
    let g = tape.vjp(&[&y], &[&Tensor::ones(&[2])], &[&a, &unused]);
    assert_eq!(g[1].data(), &[0.0, 0.0, 0.0]);
    assert!((g[0].data()[1] - 2f64.exp()).abs() < 1e-12);
}

#[test]
fn a_variable_used_twice_accumulates_both_paths() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::from_vec(vec![3.0], &[1]));
    let y = x.mul(&x).add(&x); // x² + x, derivative 2x + 1 = 7
    let g = tape.vjp(&[&y], &[&Tensor::ones(&[1])], &[&x]);
    assert_eq!(g[0].data(), &[7.0]);
}

#[test]
fn several_outputs_sum_their_cotangent_products() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::from_vec(vec![0.5, -1.0], &[2]));
    let y1 = x.mul_scalar(3.0);
    let y2 = x.powi(2);
    let c1 = Tensor::from_vec(vec![1.0, 2.0], &[2]);
    let c2 = Tensor::from_vec(vec![-1.0, 0.5], &[2]);
    let g = tape.vjp(&[&y1, &y2], &[&c1, &c2], &[&x]);
    // 3·c1 + 2x·c2
    assert_eq!(g[0].data(), &[3.0 - 1.0, 6.0 - 1.0]);
}

#[test]
fn no_grad_records_nothing() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::from_vec(vec![1.0, 2.0], &[2]));
    let before = tape.len();
    let y = no_grad(|| x.exp().mul(&x).sum_all());
    assert_eq!(tape.len(), before);
    assert!(!y.is_recorded());
    // Recording resumes afterwards.
    assert!(x.exp().is_recorded());
}

#[test]
fn constants_do_not_receive_gradients_but_contribute_values() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::from_vec(vec![2.0], &[1]));
    let c = Var::constant(Tensor::from_vec(vec![5.0], &[1]));
    let y = x.mul(&c);
    let g = tape.vjp(&[&y], &[&Tensor::ones(&[1])], &[&x]);
    assert_eq!(g[0].data(), &[5.0]);
    assert!(!c.is_recorded());
}

#[test]
fn custom_op_vjp_is_called_with_the_cotangent() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::from_vec(vec![1.0, -2.0], &[2]));
    let value = x.value().map(|v| 3.0 * v);
    let y = custom_op(
        value,
        &[&x],
        Box::new(|g, needs| {
            assert!(needs[0]);
            vec![Some(g.map(|v| 3.0 * v))]
        }),
    );
    let z = y.sum_all();
    let g = tape.vjp(&[&z], &[&Tensor::scalar(1.0)], &[&x]);
    assert_eq!(g[0].data(), &[3.0, 3.0]);
}

/// A custom op that gives no gradient (`None`) to an input that needs one: that input's
/// subgraph contributes zero, on the first VJP and on every replay (no stale buffer is read).
#[test]
fn a_custom_op_returning_none_blocks_its_input_on_every_replay() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::from_vec(vec![1.0, 2.0], &[2]));
    let h = x.mul_scalar(2.0);
    let stop = custom_op(
        h.value().clone(),
        &[&h],
        Box::new(|_, needs| {
            assert!(needs[0]);
            vec![None]
        }),
    );
    let out = stop.add(&x).sum_all();
    for _ in 0..3 {
        let g = tape.vjp(&[&out], &[&Tensor::scalar(1.0)], &[&x]);
        assert_eq!(
            g[0].data(),
            &[1.0, 1.0],
            "only the direct path x -> out counts"
        );
    }
    // A different VJP through `h` in between must not leak into the next replay of `out`.
    let hs = h.sum_all();
    let gh = tape.vjp(&[&hs], &[&Tensor::scalar(1.0)], &[&x]);
    assert_eq!(gh[0].data(), &[2.0, 2.0]);
    let g = tape.vjp(&[&out], &[&Tensor::scalar(1.0)], &[&x]);
    assert_eq!(g[0].data(), &[1.0, 1.0]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn grad_linear_matches_finite_differences(
        lead in proptest::collection::vec(1usize..4, 0..3),
        inp in 1usize..5,
        out in 1usize..5,
        bias in any::<bool>(),
        seed in 0u64..10_000,
    ) {
        let mut rng = Rng::new(seed);
        let mut xs = lead.clone();
        xs.push(inp);
        let x = Tensor::randn(&xs, 1.0, &mut rng);
        let w = Tensor::randn(&[out, inp], 1.0, &mut rng);
        let b = Tensor::randn(&[out], 1.0, &mut rng);
        let opts = GradcheckOptions::default();
        let report = if bias {
            gradcheck(|v| v[0].linear(&v[1], Some(&v[2])), &[x, w, b], &opts)
        } else {
            gradcheck(|v| v[0].linear(&v[1], None), &[x, w], &opts)
        };
        prop_assert!(report.passed(), "{}", report);
    }
}

/// `vjp_plus` is `addend + uᵀ·∂y/∂z` bit for bit (the sum is taken in the gradient's buffer),
/// on every replay, and `addend` itself where the output does not depend on the variable.
#[test]
fn vjp_plus_adds_the_addend_to_the_replayed_vjp() {
    let cell = Cell::new(3, 5, 4, 2);
    let (tape, leaves, y) = cell.record();
    let mut rng = Rng::new(8);
    for _ in 0..3 {
        let u = Tensor::randn(y.shape(), 1.0, &mut rng);
        let g = Tensor::randn(leaves[0].shape(), 1.0, &mut rng);
        let got = tape.vjp_plus(&y, &u, &leaves[0], &g);
        let vjp = tape.vjp(&[&y], &[&u], &[&leaves[0]]).remove(0);
        let want: Vec<f64> = g
            .data()
            .iter()
            .zip(vjp.data())
            .map(|(a, b)| a + b)
            .collect();
        assert_eq!(got.shape(), leaves[0].shape());
        assert_eq!(bits(&got), bits(&Tensor::from_vec(want, got.shape())));
    }
    // The output as its own variable: the cotangent plus the addend.
    let u = Tensor::randn(y.shape(), 1.0, &mut rng);
    let g = Tensor::randn(y.shape(), 1.0, &mut rng);
    let want: Vec<f64> = g.data().iter().zip(u.data()).map(|(a, b)| b + a).collect();
    assert_eq!(
        bits(&tape.vjp_plus(&y, &u, &y, &g)),
        bits(&Tensor::from_vec(want, y.shape()))
    );
    // A leaf that `y` does not depend on.
    let unused = tape.leaf(Tensor::<f64>::zeros(&[2, 2]));
    let g = Tensor::randn(&[2, 2], 1.0, &mut rng);
    let u = Tensor::randn(y.shape(), 1.0, &mut rng);
    assert_eq!(bits(&tape.vjp_plus(&y, &u, &unused, &g)), bits(&g));
}

#[test]
#[should_panic(expected = "vjp_plus: addend shape [3, 4] differs from wrt shape [3, 5]")]
fn vjp_plus_with_a_misshapen_addend_panics_with_both_shapes() {
    let cell = Cell::new(3, 5, 4, 3);
    let (tape, leaves, y) = cell.record();
    let u = Tensor::<f64>::zeros(y.shape());
    tape.vjp_plus(&y, &u, &leaves[0], &Tensor::zeros(&[3, 4]));
}
