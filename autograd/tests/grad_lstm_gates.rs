//! The fused LSTM-style update `lstm_gates`: its gradients against central finite
//! differences in f64 (relative error ≤ 1e-6), its values and VJPs against the composition of
//! element-wise ops (f64 over random shapes; f32 on a shape large enough for the threaded
//! path), with one and both inputs' gradients requested, and accumulation into an existing
//! gradient.

mod common;

use common::{check_shaped, config, dim, seed, shape, tensor_of};
use deq_autograd::ops::lstm_gates::lstm_gates_composed;
use deq_autograd::{no_grad, Float, Rng, Tape, Tensor, Var};
use proptest::prelude::*;

/// Pre-activations `[lead..., 4H]` and a cell state `[lead..., H]`, `lead` of rank 0 to 2.
fn case() -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>)> {
    (shape(0..=2), dim()).prop_flat_map(|(lead, h)| {
        let mut p = lead.clone();
        p.push(4 * h);
        let mut c = lead;
        c.push(h);
        (tensor_of(p, -3.0..3.0), tensor_of(c, -2.0..2.0))
    })
}

fn close<T: Float>(a: &[T], b: &[T], tol: f64) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let (x, y) = (x.to_f64(), y.to_f64());
            (x - y).abs() <= tol * (1.0 + y.abs())
        })
}

/// Fused against composed: the value (recorded and not), `∂pre` and `∂c_prev` together and each alone, within
/// `tol`.
fn matches_composition<T: Float>(pre: Tensor<T>, c_prev: Tensor<T>, seed: u64, tol: f64) -> bool {
    let tape = Tape::new();
    let (p, c) = (tape.leaf(pre), tape.leaf(c_prev));
    let fused = p.lstm_gates(&c);
    let composed = lstm_gates_composed(&p, &c);
    if fused.shape() != composed.shape()
        || !close(fused.value().data(), composed.value().data(), tol)
    {
        return false;
    }
    // Without a recording the forward pass keeps nothing and takes its own loop.
    let plain = no_grad(|| p.lstm_gates(&c));
    if !close(plain.value().data(), composed.value().data(), tol) {
        return false;
    }
    let u = Tensor::<T>::randn(fused.shape(), 1.0, &mut Rng::new(seed));
    let wrts: [&[&Var<T>]; 3] = [&[&p, &c], &[&p], &[&c]];
    wrts.iter().all(|wrt| {
        let gf = tape.vjp(&[&fused], &[&u], wrt);
        let gc = tape.vjp(&[&composed], &[&u], wrt);
        gf.iter()
            .zip(&gc)
            .all(|(a, b)| close(a.data(), b.data(), tol))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn grad_lstm_gates((pre, c_prev) in case(), seed in seed()) {
        let mut out = c_prev.shape().to_vec();
        *out.last_mut().unwrap() *= 2;
        check_shaped("lstm_gates", |v| v[0].lstm_gates(&v[1]), vec![pre, c_prev], &out, seed)?;
    }

    #[test]
    fn lstm_gates_equals_the_composition((pre, c_prev) in case(), seed in seed()) {
        prop_assert!(matches_composition(pre, c_prev, seed, 1e-12));
    }
}

/// `[64, 8, 4·96]` pre-activations (TrellisNet's `trellis-tiny` step): above the threshold
/// where the rows are split across threads.
#[test]
fn lstm_gates_equals_the_composition_on_the_threaded_path_in_f32() {
    let mut rng = Rng::new(7);
    let pre = Tensor::<f32>::randn(&[64, 8, 384], 2.0, &mut rng);
    let c_prev = Tensor::<f32>::randn(&[64, 8, 96], 1.0, &mut rng);
    assert!(matches_composition(pre, c_prev, 3, 1e-5));
}

/// Both inputs feed two updates: the second VJP of each accumulates into the first's gradient.
#[test]
fn lstm_gates_accumulates_over_two_uses() {
    let mut rng = Rng::new(11);
    let (pre, c_prev) = (
        Tensor::<f64>::randn(&[3, 2, 20], 1.5, &mut rng),
        Tensor::<f64>::randn(&[3, 2, 5], 1.0, &mut rng),
    );
    let tape = Tape::new();
    let (p, c) = (tape.leaf(pre), tape.leaf(c_prev));
    let c2 = c.mul(&c);
    let fused = p.lstm_gates(&c).mul(&p.lstm_gates(&c2)).sum_all();
    let composed = lstm_gates_composed(&p, &c)
        .mul(&lstm_gates_composed(&p, &c2))
        .sum_all();
    let one = Tensor::scalar(1.0);
    let gf = tape.vjp(&[&fused], &[&one], &[&p, &c]);
    let gc = tape.vjp(&[&composed], &[&one], &[&p, &c]);
    for (a, b) in gf.iter().zip(&gc) {
        assert!(
            close(a.data(), b.data(), 1e-12),
            "{:?} vs {:?}",
            a.data(),
            b.data()
        );
    }
}

#[test]
#[should_panic(expected = "lstm_gates: pre-activation shape [2, 12] and cell state shape [2, 4]")]
fn lstm_gates_names_both_shapes_on_a_mismatch() {
    let p = Var::constant(Tensor::<f64>::zeros(&[2, 12]));
    let c = Var::constant(Tensor::<f64>::zeros(&[2, 4]));
    let _ = p.lstm_gates(&c);
}
