//! The fused causal attention (`Var::causal_attention`): its VJP against central finite
//! differences in f64, and its values and VJPs against the same attention composed from the
//! engine's primitive ops (`causal_attention_composed`), with and without memory positions and
//! relative positions and with and without dropout on the probabilities, over random shapes.

mod common;

use common::{config, distinct_tensor, seed, tensor_of};
use deq_autograd::{
    causal_attention_composed, gradcheck, AttentionDropout, Device, GradcheckOptions,
    RelativePositions, Rng, Tape, Tensor, Var,
};
use proptest::prelude::*;

/// `(B, T, M, H, d_h, relative positions)`.
fn sizes() -> impl Strategy<Value = (usize, usize, usize, usize, usize, bool)> {
    (
        1usize..=2,
        1usize..=5,
        0usize..=3,
        1usize..=2,
        1usize..=3,
        any::<bool>(),
    )
}

/// Inputs `[qkv, mem?, r?, u?, v?]` for the sizes.
fn inputs(
    (b, t, m, h, dh, rel): (usize, usize, usize, usize, usize, bool),
) -> BoxedStrategy<Vec<Tensor<f64>>> {
    // Pairwise distinct projections: with two nearly equal values the gradients of `R` and
    // the biases nearly cancel and sit below the finite differences' round-off.
    let w = h * dh;
    let mut parts = vec![distinct_tensor(vec![b, t, 3 * w]).boxed()];
    if m > 0 {
        parts.push(distinct_tensor(vec![b, m, 2 * w]).boxed());
    }
    if rel {
        parts.push(tensor_of(vec![m + t, w], -1.0..1.0).boxed());
        parts.push(tensor_of(vec![h, dh], -0.5..0.5).boxed());
        parts.push(tensor_of(vec![h, dh], -0.5..0.5).boxed());
    }
    parts.boxed()
}

/// No dropout half of the time, else a rate and a seed.
fn dropout() -> impl Strategy<Value = Option<AttentionDropout>> {
    prop::option::of((0.1f64..0.6, any::<u64>()).prop_map(|(p, s)| AttentionDropout::new(p, s)))
}

/// Applies the fused (`composed == false`) or composed attention to `v` laid out by
/// [`inputs`], with the dropout mask `drop`.
fn attend(
    v: &[Var<f64>],
    (m, h, dh, rel): (usize, usize, usize, bool),
    drop: Option<AttentionDropout>,
    composed: bool,
) -> Var<f64> {
    let mem = (m > 0).then(|| &v[1]);
    let at = if m > 0 { 2 } else { 1 };
    let pos = rel.then(|| RelativePositions {
        r: &v[at],
        u: &v[at + 1],
        v: &v[at + 2],
    });
    let scale = 1.0 / (dh as f64).sqrt();
    if composed {
        causal_attention_composed(&v[0], mem, pos, h, scale, drop)
    } else {
        v[0].causal_attention_with(mem, pos, h, scale, drop)
    }
}

fn max_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fused_attention_gradients_match_finite_differences(
        (s, x, seed) in sizes().prop_flat_map(|s| (Just(s), inputs(s), seed())),
        drop in dropout(),
    ) {
        let (b, t, m, h, dh, rel) = s;
        let k = (m, h, dh, rel);
        let y = attend(&x.iter().cloned().map(Var::constant).collect::<Vec<_>>(), k, drop, false);
        prop_assert_eq!(y.shape(), &[b, t, h * dh]);
        // The biases' gradients are sums over every score and may cancel down to the finite
        // differences' round-off (about 1e-11 here): an absolute floor of 1e-9 on top of the
        // relative 1e-6. Twice: the op alone (its VJP writes each buffer) and applied twice
        // to the same inputs (the second VJP adds to what the first wrote).
        let opts = GradcheckOptions { tolerance: 1e-6, abs_tolerance: 1e-9, seed, ..Default::default() };
        let once = gradcheck(|v| attend(v, k, drop, false), &x, &opts);
        prop_assert!(once.passed(), "{}", once);
        let twice = gradcheck(
            |v| attend(v, k, drop, false).add(&attend(v, k, drop, false).mul_scalar(0.5)),
            &x,
            &opts,
        );
        prop_assert!(twice.passed(), "{}", twice);
    }

    #[test]
    fn fused_attention_equals_the_composed_ops(
        (s, x, seed) in sizes().prop_flat_map(|s| (Just(s), inputs(s), seed())),
        drop in dropout(),
    ) {
        let (b, t, m, h, dh, rel) = s;
        let run = |composed: bool| {
            let tape = Tape::new();
            let vars: Vec<Var<f64>> = x.iter().map(|t| tape.leaf(t.clone())).collect();
            let y = attend(&vars, (m, h, dh, rel), drop, composed);
            let u = Tensor::randn(&[b, t, h * dh], 1.0, &mut Rng::new(seed));
            let wrt: Vec<&Var<f64>> = vars.iter().collect();
            let grads = tape.vjp(&[&y], &[&u], &wrt);
            (y.value().clone(), grads)
        };
        let ((y1, g1), (y2, g2)) = (run(false), run(true));
        prop_assert!(max_diff(&y1, &y2) < 1e-12, "values differ by {}", max_diff(&y1, &y2));
        for (k, (a, b)) in g1.iter().zip(&g2).enumerate() {
            prop_assert!(max_diff(a, b) < 1e-10, "gradient {k} differs by {}", max_diff(a, b));
        }
    }
}

/// Sequences longer than one block of query rows (the proptest's are shorter): the blocked
/// products over queries, keys and distances, at sizes that are not multiples of a block,
/// with and without memory, relative positions and dropout, and applied twice so that the
/// second VJP adds to what the first wrote. Against the composed ops.
#[test]
fn fused_attention_over_several_blocks_equals_the_composed_ops() {
    let cases = [
        (2, 70, 40, 2, 3, true),
        (1, 67, 0, 1, 4, false),
        (1, 33, 5, 2, 2, true),
    ];
    for (n, &(b, t, m, h, dh, rel)) in cases.iter().enumerate() {
        let mut rng = Rng::new(40 + n as u64);
        let w = h * dh;
        let mut x = vec![Tensor::<f64>::randn(&[b, t, 3 * w], 1.0, &mut rng)];
        if m > 0 {
            x.push(Tensor::randn(&[b, m, 2 * w], 1.0, &mut rng));
        }
        if rel {
            x.push(Tensor::randn(&[m + t, w], 0.5, &mut rng));
            x.push(Tensor::randn(&[h, dh], 0.3, &mut rng));
            x.push(Tensor::randn(&[h, dh], 0.3, &mut rng));
        }
        let u = Tensor::randn(&[b, t, w], 1.0, &mut rng);
        for drop in [None, Some(AttentionDropout::new(0.3, 7 + n as u64))] {
            let run = |composed: bool| {
                let tape = Tape::new();
                let vars: Vec<Var<f64>> = x.iter().map(|t| tape.leaf(t.clone())).collect();
                let k = (m, h, dh, rel);
                let once = attend(&vars, k, drop, composed);
                let y = once.add(&attend(&vars, k, drop, composed).mul_scalar(0.5));
                let wrt: Vec<&Var<f64>> = vars.iter().collect();
                (y.value().clone(), tape.vjp(&[&y], &[&u], &wrt))
            };
            let ((y1, g1), (y2, g2)) = (run(false), run(true));
            let case = format!("case {n}, dropout {}", drop.is_some());
            assert!(
                max_diff(&y1, &y2) < 1e-12,
                "{case}: values differ by {}",
                max_diff(&y1, &y2)
            );
            for (k, (a, b)) in g1.iter().zip(&g2).enumerate() {
                let scale = b.data().iter().fold(1.0f64, |s, v| s.max(v.abs()));
                let diff = max_diff(a, b);
                assert!(
                    diff < 1e-11 * scale,
                    "{case}: gradient {k} differs by {diff}"
                );
            }
        }
    }
}

#[test]
#[should_panic(
    expected = "causal_attention: memory shape [2, 3, 10] does not match qkv shape [2, 4, 12]"
)]
fn mismatched_memory_panics_with_both_shapes() {
    let qkv = Var::constant(Tensor::<f64>::zeros(&[2, 4, 12]));
    let mem = Var::constant(Tensor::<f64>::zeros(&[2, 3, 10]));
    qkv.causal_attention(Some(&mem), None, 2, 1.0);
}

/// The mask is a function of the seed alone: the same seed drops the same entries on every
/// call (as every solver iteration of one forward pass needs), another seed others, and the
/// dropped fraction is the rate.
#[test]
fn attention_dropout_masks_are_fixed_per_seed_and_drop_at_their_rate() {
    let qkv = Var::constant(Tensor::<f64>::randn(&[2, 16, 24], 1.0, &mut Rng::new(3)));
    let run = |drop| qkv.causal_attention_with(None, None, 2, 0.5, drop);
    let (a, b) = (
        AttentionDropout::new(0.3, 11),
        AttentionDropout::new(0.3, 12),
    );
    assert_eq!(run(Some(a)).value().data(), run(Some(a)).value().data());
    assert!(max_diff(run(Some(a)).value(), run(Some(b)).value()) > 1e-3);
    // Rate 0 is no dropout.
    let none = run(None);
    assert_eq!(
        run(Some(AttentionDropout::new(0.0, 5))).value().data(),
        none.value().data()
    );
    // Over a million entries the dropped fraction is within 0.2% of the rate, and the kept
    // ones carry 1/(1 − p).
    let mask = AttentionDropout::new(0.3, 7).mask::<f64>(&[1 << 20]);
    let dropped = mask.data().iter().filter(|&&v| v == 0.0).count() as f64 / (1 << 20) as f64;
    assert!((dropped - 0.3).abs() < 2e-3, "dropped fraction {dropped}");
    assert!(mask
        .data()
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12));
}

/// The composed path's mask is built once per seed, rate, shape and type: a second request
/// returns the same storage, any other key a fresh mask equal to `mask`.
#[test]
fn attention_dropout_masks_on_a_device_are_built_once_per_key() {
    let (a, b) = (
        AttentionDropout::new(0.3, 21),
        AttentionDropout::new(0.3, 22),
    );
    let shape = [2, 2, 8, 12];
    let first = a.mask_on::<f64>(&shape, Device::Cpu).unwrap();
    let again = a.mask_on::<f64>(&shape, Device::Cpu).unwrap();
    assert_eq!(first.data().as_ptr(), again.data().as_ptr());
    assert_eq!(first.data(), a.mask::<f64>(&shape).data());
    for (other, want) in [
        (
            b.mask_on::<f64>(&shape, Device::Cpu).unwrap(),
            b.mask::<f64>(&shape),
        ),
        (
            AttentionDropout::new(0.4, 21)
                .mask_on::<f64>(&shape, Device::Cpu)
                .unwrap(),
            AttentionDropout::new(0.4, 21).mask::<f64>(&shape),
        ),
        (
            a.mask_on::<f64>(&[2, 2, 8, 13], Device::Cpu).unwrap(),
            a.mask::<f64>(&[2, 2, 8, 13]),
        ),
    ] {
        assert_eq!(other.shape(), want.shape());
        assert_eq!(other.data(), want.data());
    }
    let single = a.mask_on::<f32>(&shape, Device::Cpu).unwrap();
    assert_eq!(single.data(), a.mask::<f32>(&shape).data());
}

#[test]
#[should_panic(expected = "attention dropout: rate 1 is not in [0, 1)")]
fn attention_dropout_of_rate_one_panics() {
    AttentionDropout::new(1.0, 0);
}
