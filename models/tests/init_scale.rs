//! The DEQ-Transformer's injection at initialisation: the token part `u = emb·W_injᵀ + b`
//! enters the QKV projection beside `qkv(z)`, and a token part far smaller than `qkv(z)`
//! leaves the first solves nearly independent of the input. The reference (init std 0.01
//! for every weight, embeddings scaled by √d) has `std(u)/std(qkv(z)) ≈ 0.16` for a
//! unit-variance (post-LayerNorm) `z`; here the presets' models must lie within a factor of
//! 2.5 of that, not the 50× gap of an unscaled embedding.

use deq_autograd::{no_grad, Rng, Tensor, Var};
use deq_models::config::TrainConfig;
use deq_models::LanguageModel;

fn std_dev(t: &Tensor<f64>) -> f64 {
    let n = t.data().len() as f64;
    let mean = t.data().iter().sum::<f64>() / n;
    (t.data()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum::<f64>()
        / n)
        .sqrt()
}

fn param<'a>(m: &'a LanguageModel<f64>, name: &str) -> &'a Tensor<f64> {
    let i = m.store.names().iter().position(|n| n == name);
    &m.store.values()[i.unwrap_or_else(|| panic!("no parameter {name}"))]
}

/// `std(u) / std(qkv(z))` at initialisation for the preset's model.
fn injection_ratio(preset: &str) -> f64 {
    let mut cfg = TrainConfig::preset(preset).expect("a preset").model;
    cfg.vocab = 1000;
    let model = LanguageModel::<f64>::new(&cfg, &mut Rng::new(1));
    let d = cfg.d_embed;
    no_grad(|| {
        let tokens: Vec<usize> = (0..256).map(|i| (i * 37) % cfg.vocab).collect();
        let emb = Var::constant(param(&model, "embedding").clone())
            .embedding(&tokens, &[1, tokens.len()])
            .mul_scalar((d as f64).sqrt());
        let w_inj = Var::constant(param(&model, "inject.weight").clone());
        let b_inj = Var::constant(param(&model, "inject.bias").clone());
        let u = emb.linear(&w_inj, Some(&b_inj));
        let z = Var::constant(Tensor::randn(&[1, tokens.len(), d], 1.0, &mut Rng::new(2)));
        // With weight normalisation the gain starts at the rows' norms: the effective weight
        // is the drawn one.
        let qkv = z.linear(
            &Var::constant(param(&model, "cell.qkv.weight").clone()),
            None,
        );
        std_dev(u.value()) / std_dev(qkv.value())
    })
}

#[test]
fn the_injection_is_comparable_to_the_state_projection_at_initialisation() {
    for preset in ["tiny", "ptb-small", "ptb-1h"] {
        let ratio = injection_ratio(preset);
        println!("{preset}: std(u)/std(qkv(z)) = {ratio:.3}");
        assert!(
            (0.16 / 2.5..0.16 * 2.5).contains(&ratio),
            "{preset}: std(u)/std(qkv(z)) = {ratio:.3}, the reference's is about 0.16"
        );
    }
}
