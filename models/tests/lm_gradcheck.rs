//! The language models' gradients (implicit through the DEQ) against finite differences, f64,
//! without dropout and with every dropout on (the masks drawn from one seed on each evaluation,
//! so the finite differences see the same masked model).

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
    check_with(cell, mode, 0.0)
}

/// `drop`: the language model's embedding and output dropout, and whether to draw masks.
fn check_with(cell: CellConfig, mode: BackwardMode, drop: f64) {
    let cfg = ModelConfig {
        vocab: 7,
        d_embed: 4,
        emb_dropout: drop,
        emb_scale: true,
        out_dropout: drop,
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
            let mut masks = Rng::new(9);
            let rng = (drop > 0.0).then_some(&mut masks);
            model
                .forward(p, &tokens, &targets, 2, &Memory::default(), &deq_cfg, rng)
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
        att_dropout: 0.0,
        weight_norm: true,
    })
}

fn trellis() -> CellConfig {
    CellConfig::Trellisnet(TrellisConfig {
        weight_norm: true,
        hidden: 5,
        dropout: 0.0,
        weight_drop: 0.0,
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
fn transformer_lm_with_every_dropout_implicit_gradients_match_finite_differences() {
    let mut cell = match transformer() {
        CellConfig::Transformer(c) => c,
        _ => unreachable!(),
    };
    (cell.dropout, cell.pos_dropout, cell.att_dropout) = (0.2, 0.2, 0.3);
    check_with(CellConfig::Transformer(cell), BackwardMode::Implicit, 0.2);
}

#[test]
fn trellisnet_lm_with_dropout_and_weight_drop_implicit_gradients_match_finite_differences() {
    let cell = CellConfig::Trellisnet(TrellisConfig {
        weight_norm: true,
        hidden: 5,
        dropout: 0.2,
        weight_drop: 0.3,
    });
    check_with(cell, BackwardMode::Implicit, 0.2);
}

#[test]
fn trellisnet_lm_implicit_gradients_match_finite_differences() {
    check(trellis(), BackwardMode::Implicit);
}
