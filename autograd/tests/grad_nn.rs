//! Gradient properties of the network ops: `softmax`, `log_softmax`, `layer_norm` (with and
//! without affine), `embedding`, `causal_conv1d` (dilated, with and without bias),
//! `masked_fill` (causal masks broadcast over leading dimensions, and general broadcast
//! masks), `dropout` with a given mask (full-shape and broadcast) and `cross_entropy`, against
//! central finite differences in f64 (relative error ≤ 1e-6).
//!
//! Rows of length 2 get a layer-norm `ε ≥ 0.1`: there the normalised row is `±δ/√(δ² + ε)`,
//! whose gradient is `O(ε)` under every cotangent, so with a tiny `ε` it would sit below the
//! finite differences' round-off.

mod common;

use common::{
    away_from_zero, broadcastable_to, check_shaped, config, dim, seed, shape, tensor, tensor_of,
};
use deq_autograd::{dropout_mask, Mask, Rng, Tensor};
use proptest::collection::vec;
use proptest::prelude::*;

/// A tensor `[lead..., d]` with `lead` of rank 0 to 2 and `1 ≤ d ≤ 5`.
fn rows(lo: f64, hi: f64) -> impl Strategy<Value = Tensor<f64>> {
    (shape(0..=2), 1usize..=5).prop_flat_map(move |(mut s, d)| {
        s.push(d);
        tensor_of(s, lo..hi)
    })
}

/// A layer-norm input (as [`rows`]) and an epsilon: `1e-5` or up to `0.5`, at least `0.1`
/// for rows of length 2 (see the module docs).
fn layer_norm_case() -> impl Strategy<Value = (Tensor<f64>, f64)> {
    rows(-2.0, 2.0).prop_flat_map(|x| {
        let eps = if x.shape().last() == Some(&2) {
            (0.1..0.5f64).boxed()
        } else {
            prop_oneof![Just(1e-5), 1e-3..0.5f64].boxed()
        };
        (Just(x), eps)
    })
}

/// Inputs of a causal convolution: `x [B, T, C_in]`, `w [K, C_in, C_out]`, `bias [C_out]`,
/// and a dilation in `1..=3` (so some taps reach before the first step). `x` and `w` keep
/// `|v| ≥ 0.1`: with a single value near zero under a bias of order 1, the other operand's
/// gradient would sit below the round-off of the biased output.
fn conv_case() -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>, Tensor<f64>, usize)> {
    (1usize..=2, 1usize..=6, dim(), dim(), 1usize..=3, 1usize..=3).prop_flat_map(
        |(b, t, c_in, c_out, k, dilation)| {
            (
                tensor_of(vec![b, t, c_in], away_from_zero(0.1, 1.0)),
                tensor_of(vec![k, c_in, c_out], away_from_zero(0.1, 1.0)),
                tensor_of(vec![c_out], -1.0..1.0),
                Just(dilation),
            )
        },
    )
}

/// A causal mask `[t, m + t]` (memory `m` in `0..=2`) and an input `[lead..., t, m + t]`
/// with `lead` of rank 0 to 2, so the mask broadcasts over the leading dimensions.
fn causal_case() -> impl Strategy<Value = (Tensor<f64>, usize, usize)> {
    (shape(0..=2), 1usize..=4, 0usize..=2).prop_flat_map(|(mut s, t, m)| {
        s.extend([t, m + t]);
        (tensor_of(s, -2.0..2.0), Just(t), Just(m))
    })
}

fn causal_mask(t: usize, m: usize) -> Mask {
    if m == 0 {
        Mask::causal(t)
    } else {
        Mask::causal_with_memory(t, m)
    }
}

/// An input and a shape that broadcasts to it (for masks).
fn with_broadcast_shape() -> impl Strategy<Value = (Tensor<f64>, Vec<usize>)> {
    shape(1..=4).prop_flat_map(|s| (tensor_of(s.clone(), -2.0..2.0), broadcastable_to(s)))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn grad_softmax(x in rows(-3.0, 3.0), seed in seed()) {
        let out = x.shape().to_vec();
        check_shaped("softmax", |v| v[0].softmax(), vec![x], &out, seed)?;
    }

    #[test]
    fn grad_log_softmax(x in rows(-3.0, 3.0), seed in seed()) {
        let out = x.shape().to_vec();
        check_shaped("log_softmax", |v| v[0].log_softmax(), vec![x], &out, seed)?;
    }

    #[test]
    fn grad_layer_norm((x, eps) in layer_norm_case(), seed in seed()) {
        let out = x.shape().to_vec();
        check_shaped(&format!("layer_norm(eps {eps})"), |v| v[0].layer_norm(eps), vec![x], &out, seed)?;
    }

    /// Layer norm with `gamma` and `beta`: VJPs of the input and of both parameters.
    #[test]
    fn grad_layer_norm_affine(
        (x, gamma, beta, eps) in layer_norm_case().prop_flat_map(|(x, eps)| {
            let d = *x.shape().last().unwrap();
            (
                Just(x),
                tensor_of(vec![d], away_from_zero(0.5, 1.5)),
                tensor_of(vec![d], -1.0..1.0),
                Just(eps),
            )
        }),
        seed in seed(),
    ) {
        let out = x.shape().to_vec();
        check_shaped(
            &format!("layer_norm_affine(eps {eps})"),
            |v| v[0].layer_norm_affine(&v[1], &v[2], eps),
            vec![x, gamma, beta],
            &out,
            seed,
        )?;
    }

    /// Embedding gather with repeated ids (the scatter-add VJP accumulates them).
    #[test]
    fn grad_embedding(
        (table, ids, ids_shape) in (1usize..=5, dim(), shape(0..=2)).prop_flat_map(
            |(vocab, d, ids_shape)| {
                let count = ids_shape.iter().product::<usize>();
                (
                    tensor_of(vec![vocab, d], -1.0..1.0),
                    vec(0..vocab, count),
                    Just(ids_shape),
                )
            },
        ),
        seed in seed(),
    ) {
        let mut out = ids_shape.clone();
        out.push(table.shape()[1]);
        check_shaped(
            &format!("embedding of ids {ids:?}"),
            |v| v[0].embedding(&ids, &ids_shape),
            vec![table],
            &out,
            seed,
        )?;
    }

    #[test]
    fn grad_causal_conv1d_dilated_with_bias(
        (x, w, bias, dilation) in conv_case(),
        seed in seed(),
    ) {
        let out = vec![x.shape()[0], x.shape()[1], w.shape()[2]];
        check_shaped(
            &format!("causal_conv1d with bias, dilation {dilation}"),
            |v| v[0].causal_conv1d(&v[1], Some(&v[2]), dilation),
            vec![x, w, bias],
            &out,
            seed,
        )?;
    }

    #[test]
    fn grad_causal_conv1d_dilated_without_bias(
        (x, w, _bias, dilation) in conv_case(),
        seed in seed(),
    ) {
        let out = vec![x.shape()[0], x.shape()[1], w.shape()[2]];
        check_shaped(
            &format!("causal_conv1d without bias, dilation {dilation}"),
            |v| v[0].causal_conv1d(&v[1], None, dilation),
            vec![x, w],
            &out,
            seed,
        )?;
    }

    /// `masked_fill` with a causal mask broadcast over leading (batch, head) dimensions.
    #[test]
    fn grad_masked_fill_causal((x, t, m) in causal_case(), fill in -1.0..1.0f64, seed in seed()) {
        let mask = causal_mask(t, m);
        let out = x.shape().to_vec();
        check_shaped(
            &format!("masked_fill causal [{t}, {}]", m + t),
            |v| v[0].masked_fill(&mask, fill),
            vec![x],
            &out,
            seed,
        )?;
    }

    /// Attention's use: `masked_fill(-∞)` then softmax (masked entries get exact zeros).
    #[test]
    fn grad_masked_fill_causal_neg_inf_softmax((x, t, m) in causal_case(), seed in seed()) {
        let mask = causal_mask(t, m);
        let out = x.shape().to_vec();
        check_shaped(
            "masked_fill(-inf) + softmax",
            |v| v[0].masked_fill(&mask, f64::NEG_INFINITY).softmax(),
            vec![x],
            &out,
            seed,
        )?;
    }

    /// The fused `masked_softmax` with a causal mask repeated over leading dimensions.
    #[test]
    fn grad_masked_softmax_causal((x, t, m) in causal_case(), seed in seed()) {
        let mask = causal_mask(t, m);
        let out = x.shape().to_vec();
        check_shaped("masked_softmax", |v| v[0].masked_softmax(&mask), vec![x], &out, seed)?;
    }

    /// `masked_softmax` equals `masked_fill(−∞)` then `softmax`, values and VJP, for any mask
    /// over the trailing dimensions; a fully masked row is zeros with a zero gradient, where
    /// the composition's value is NaN (and its gradient zero).
    #[test]
    fn masked_softmax_equals_the_composition(
        (x, keep) in rows(-3.0, 3.0).prop_flat_map(|x| {
            let n = x.shape()[x.shape().len() - 1] * if x.shape().len() > 1 { x.shape()[x.shape().len() - 2] } else { 1 };
            (Just(x), vec(any::<bool>(), n))
        }),
        seed in seed(),
    ) {
        let trailing = x.shape()[x.shape().len().saturating_sub(2)..].to_vec();
        let mask = Mask::new(keep, &trailing);
        let tape = deq_autograd::Tape::new();
        let xv = tape.leaf(x.clone());
        let fused = xv.masked_softmax(&mask);
        let composed = xv.masked_fill(&mask, f64::NEG_INFINITY).softmax();
        let same = |a: &[f64], b: &[f64]| {
            a.iter().zip(b).all(|(a, b)| (b.is_nan() && *a == 0.0) || (a - b).abs() <= 1e-12)
        };
        prop_assert!(same(fused.value().data(), composed.value().data()));
        let u = Tensor::randn(x.shape(), 1.0, &mut Rng::new(seed));
        let gf = tape.vjp(&[&fused], &[&u], &[&xv]).remove(0);
        let gc = tape.vjp(&[&composed], &[&u], &[&xv]).remove(0);
        prop_assert!(same(gf.data(), gc.data()), "{:?} vs {:?}", gf.data(), gc.data());
    }

    /// `masked_fill` with a random mask of any shape that broadcasts to the input.
    #[test]
    fn grad_masked_fill_broadcast_mask(
        (x, mask) in with_broadcast_shape().prop_flat_map(|(x, ms)| {
            let n = ms.iter().product::<usize>();
            (Just(x), vec(any::<bool>(), n).prop_map(move |bits| Mask::new(bits, &ms)))
        }),
        fill in -1.0..1.0f64,
        seed in seed(),
    ) {
        let out = x.shape().to_vec();
        check_shaped(
            &format!("masked_fill mask {:?}", mask.shape()),
            |v| v[0].masked_fill(&mask, fill),
            vec![x],
            &out,
            seed,
        )?;
    }

    /// Dropout with a mask of the input's own shape.
    #[test]
    fn grad_dropout_full_mask(
        x in tensor(1..=4, -2.0, 2.0),
        p in 0.0..0.7f64,
        mask_seed in any::<u64>(),
        seed in seed(),
    ) {
        let mask = dropout_mask::<f64>(x.shape(), p, &mut Rng::new(mask_seed));
        let out = x.shape().to_vec();
        check_shaped("dropout full mask", |v| v[0].dropout(&mask), vec![x], &out, seed)?;
    }

    /// Dropout with a mask broadcast over some dimensions (variational dropout).
    #[test]
    fn grad_dropout_broadcast_mask(
        (x, mask_shape) in with_broadcast_shape(),
        p in 0.0..0.7f64,
        mask_seed in any::<u64>(),
        seed in seed(),
    ) {
        let mask = dropout_mask::<f64>(&mask_shape, p, &mut Rng::new(mask_seed));
        let out = x.shape().to_vec();
        check_shaped(
            &format!("dropout mask {mask_shape:?}"),
            |v| v[0].dropout(&mask),
            vec![x],
            &out,
            seed,
        )?;
    }

    /// Mean cross-entropy of logits `[lead..., C]` against one target per row.
    #[test]
    fn grad_cross_entropy(
        (logits, targets) in rows(-3.0, 3.0).prop_flat_map(|x| {
            let c = *x.shape().last().unwrap();
            let n = x.numel() / c;
            (Just(x), vec(0..c, n))
        }),
        seed in seed(),
    ) {
        check_shaped(
            &format!("cross_entropy targets {targets:?}"),
            |v| v[0].cross_entropy(&targets),
            vec![logits],
            &[],
            seed,
        )?;
    }
}

#[test]
#[should_panic(
    expected = "masked_softmax: mask of shape [3] must be the trailing dimensions of input [2, 4]"
)]
fn masked_softmax_names_a_mask_that_is_not_a_suffix() {
    let x = deq_autograd::Var::constant(Tensor::<f64>::zeros(&[2, 4]));
    let _ = x.masked_softmax(&Mask::new(vec![false; 3], &[3]));
}

#[test]
fn masked_softmax_gives_zeros_for_rows_without_a_finite_kept_score_on_both_paths() {
    let inf = f64::NEG_INFINITY;
    // Row 0 keeps only a −∞ score; row 1 is an ordinary row.
    let x = deq_autograd::Var::constant(Tensor::from_vec(vec![inf, 5.0, 0.0, 1.0], &[2, 2]));
    let prefix = Mask::causal(2); // row 0 keeps [0], row 1 keeps [0, 1]
    let general = Mask::new(vec![false, true, true, false], &[2, 2]); // row 1 keeps [1]
    let p = x.masked_softmax(&prefix);
    assert_eq!(p.value().data()[..2], [0.0, 0.0]);
    let want = 1.0 / (1.0 + 1f64.exp());
    assert!((p.value().data()[2] - want).abs() < 1e-15);
    let g = x.masked_softmax(&general);
    assert_eq!(g.value().data(), &[0.0, 0.0, 0.0, 1.0]);
}
