//! The language models' gradients (implicit through the DEQ) against finite differences, f64.

use deq_autograd::{gradcheck, GradcheckOptions, Rng, Var};
use deq_models::cells::{TransformerConfig, TrellisConfig};
use deq_models::{CellConfig, LanguageModel, Memory, ModelConfig};
use deq_solvers::{BackwardMode, DeqConfig, SolverConfig, SolverKind, StopMode};

fn tight(mode: BackwardMode) -> DeqConfig {
    let s = SolverConfig::new(
        SolverKind::Broyden { memory: 60 },
        200,
        1e-12,
        StopMode::Abs,
    )
    .unwrap();
    DeqConfig::new(s.clone(), s, mode).unwrap()
}

fn check(cell: CellConfig, mode: BackwardMode) {
    let cfg = ModelConfig {
        vocab: 7,
        d_embed: 4,
        emb_dropout: 0.0,
        emb_scale: true,
        out_dropout: 0.0,
        cell,
    };
    let mut rng = Rng::new(3);
    let model = LanguageModel::<f64>::new(&cfg, &mut rng);
    let tokens = [1usize, 4, 2, 6, 0, 3];
    let targets = [4usize, 2, 6, 0, 3, 5];
    let deq_cfg = tight(mode);
    let values = model.store.values().to_vec();
    let opts = GradcheckOptions {
        step: 1e-5,
        tolerance: 1e-5,
        abs_tolerance: 1e-9,
        seed: 1,
    };
    let report = gradcheck(
        |p: &[Var<f64>]| {
            model
                .forward(p, &tokens, &targets, 2, &Memory::default(), &deq_cfg, None)
                .loss
        },
        &values,
        &opts,
    );
    println!("{report}");
    assert!(report.passed(), "{report}");
}

fn transformer() -> CellConfig {
    CellConfig::Transformer(TransformerConfig {
        d_model: 4,
        n_head: 2,
        d_inner: 8,
        mem_len: 2,
        dropout: 0.0,
        pos_dropout: 0.0,
        weight_norm: true,
    })
}

fn trellis() -> CellConfig {
    CellConfig::Trellisnet(TrellisConfig {
        weight_norm: true,
        hidden: 5,
        dropout: 0.0,
    })
}

#[test]
fn transformer_lm_unrolled_gradients_match_finite_differences() {
    check(transformer(), BackwardMode::Unrolled { k: 2 });
}

#[test]
fn transformer_lm_implicit_gradients_match_finite_differences() {
    check(transformer(), BackwardMode::Implicit);
}

#[test]
fn trellisnet_lm_implicit_gradients_match_finite_differences() {
    check(trellis(), BackwardMode::Implicit);
}
