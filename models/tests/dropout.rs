//! Dropout in the DEQ models (f64): every mask is drawn once per forward pass, so one solve
//! finds the equilibrium of one fixed masked cell; the next training step draws new masks;
//! evaluation has none.

use deq_autograd::{no_grad, Rng, Tensor, Var};
use deq_models::cells::{DeqTransformerCell, TransformerConfig, TrellisConfig, TrellisNetCell};
use deq_models::{CellConfig, LanguageModel, Memory, ModelConfig, ParamStore};
use deq_solvers::implicit::ImplicitCell;
use deq_solvers::{deq, BackwardMode, DeqConfig, SolverConfig, SolverKind, StopMode};

const BATCH: usize = 2;
const LEN: usize = 5;
const D: usize = 8;

fn transformer_cfg(dropout: f64) -> TransformerConfig {
    TransformerConfig {
        d_model: D,
        n_head: 2,
        d_inner: 16,
        mem_len: 0,
        dropout,
        pos_dropout: 0.0,
        att_dropout: 0.0,
        weight_norm: true,
    }
}

/// The cell's parameters (as constants, seeded: the dropout rate does not change them) and a
/// random injection `[B, T, 3d]` and state `[B, T, d]`.
fn cell_and_inputs(dropout: f64) -> (DeqTransformerCell, Vec<Var<f64>>, Var<f64>, Var<f64>) {
    cell_and_inputs_for(&transformer_cfg(dropout))
}

/// [`cell_and_inputs`] for any configuration of the cell.
fn cell_and_inputs_for(
    cfg: &TransformerConfig,
) -> (DeqTransformerCell, Vec<Var<f64>>, Var<f64>, Var<f64>) {
    let mut rng = Rng::new(11);
    let mut store = ParamStore::<f64>::new();
    let cell = DeqTransformerCell::new(&mut store, "cell", cfg, &mut rng);
    let eff = cell.prepare(&store.constants(), None, LEN, None);
    let u = Var::constant(Tensor::randn(&[BATCH, LEN, 3 * D], 0.5, &mut rng));
    let z = Var::constant(Tensor::randn(&[BATCH, LEN, D], 1.0, &mut rng));
    (cell, eff, u, z)
}

fn max_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let pairs = a.data().iter().zip(b.data());
    pairs.map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn tight() -> DeqConfig {
    let s = SolverConfig::new(
        SolverKind::Broyden { memory: 60 },
        200,
        1e-11,
        StopMode::Abs,
    )
    .unwrap();
    DeqConfig::new(s.clone(), s, BackwardMode::Implicit).unwrap()
}

#[test]
fn one_forward_pass_keeps_its_masks_so_the_solve_finds_a_fixed_point_of_the_masked_cell() {
    no_grad(|| {
        let (cell, eff, u, z) = cell_and_inputs(0.3);
        let step = cell.step::<f64>(BATCH, Some(&mut Rng::new(5)));
        let (a, b) = (step.apply(&z, &u, &eff), step.apply(&z, &u, &eff));
        assert_eq!(
            max_diff(a.value(), b.value()),
            0.0,
            "a second call drew new masks"
        );
        let z0 = Tensor::zeros(&[BATCH, LEN, D]);
        let res = deq(&step, &u, &eff, &z0, &tight());
        let again = step.apply(&res.z, &u, &eff);
        let resid = max_diff(again.value(), res.z.value());
        assert!(resid < 1e-9, "f(z*) - z* = {resid:e} for the same masks");
        // The masks do something: the equilibrium is not the unmasked cell's.
        let plain = cell.step::<f64>(BATCH, None);
        let off = max_diff(plain.apply(&res.z, &u, &eff).value(), res.z.value());
        assert!(off > 1e-3, "the unmasked cell moves z* by only {off:e}");
    });
}

#[test]
fn each_forward_pass_draws_new_masks() {
    no_grad(|| {
        let (cell, eff, u, z) = cell_and_inputs(0.3);
        let mut rng = Rng::new(5);
        let first = cell.step::<f64>(BATCH, Some(&mut rng)).apply(&z, &u, &eff);
        let second = cell.step::<f64>(BATCH, Some(&mut rng)).apply(&z, &u, &eff);
        let diff = max_diff(first.value(), second.value());
        assert!(
            diff > 1e-3,
            "two training steps used the same masks ({diff:e})"
        );
    });
}

#[test]
fn evaluation_applies_no_dropout_in_the_cell() {
    no_grad(|| {
        let (cell, eff, u, z) = cell_and_inputs(0.3);
        let (plain, _, _, _) = cell_and_inputs(0.0);
        let eval = cell.step::<f64>(BATCH, None).apply(&z, &u, &eff);
        let reference = plain
            .step::<f64>(BATCH, Some(&mut Rng::new(5)))
            .apply(&z, &u, &eff);
        assert_eq!(max_diff(eval.value(), reference.value()), 0.0);
    });
}

fn lm(cell: CellConfig, p: f64) -> LanguageModel<f64> {
    let cfg = ModelConfig {
        vocab: 9,
        d_embed: D,
        emb_dropout: p,
        emb_scale: true,
        out_dropout: p,
        cell,
    };
    LanguageModel::new(&cfg, &mut Rng::new(3))
}

fn cells(p: f64) -> [CellConfig; 2] {
    [
        CellConfig::Transformer(transformer_cfg(p)),
        CellConfig::Trellisnet(TrellisConfig {
            weight_norm: false,
            hidden: 10,
            dropout: p,
            weight_drop: 0.0,
        }),
    ]
}

fn logits(m: &LanguageModel<f64>, rng: Option<&mut Rng>) -> Tensor<f64> {
    let tokens: Vec<usize> = (0..BATCH * LEN).map(|i| (i * 7 + 2) % 9).collect();
    no_grad(|| {
        let p = m.store.constants();
        let mem = Memory::default();
        m.logits(&p, &tokens, BATCH, &mem, &tight(), rng)
            .0
            .into_value()
    })
}

#[test]
fn the_language_models_drop_in_training_only_with_new_masks_each_pass() {
    for (with, without) in cells(0.3).into_iter().zip(cells(0.0)) {
        let (m, plain) = (lm(with, 0.3), lm(without, 0.0));
        let reference = logits(&plain, Some(&mut Rng::new(1)));
        assert_eq!(
            max_diff(&logits(&m, None), &reference),
            0.0,
            "evaluation dropped something"
        );
        let a = logits(&m, Some(&mut Rng::new(1)));
        let b = logits(&m, Some(&mut Rng::new(1)));
        assert_eq!(max_diff(&a, &b), 0.0, "the same seed drew other masks");
        let c = logits(&m, Some(&mut Rng::new(2)));
        assert!(max_diff(&a, &c) > 1e-3, "another seed drew the same masks");
        assert!(max_diff(&a, &reference) > 1e-3, "training dropped nothing");
    }
}

/// A Transformer LM whose only dropout is on the position embeddings.
fn positional_only(p: f64) -> LanguageModel<f64> {
    let mut cell = transformer_cfg(0.0);
    cell.pos_dropout = p;
    lm(CellConfig::Transformer(cell), 0.0)
}

#[test]
fn positional_dropout_draws_one_mask_per_pass_and_none_in_evaluation() {
    let (m, plain) = (positional_only(0.3), positional_only(0.0));
    let reference = logits(&plain, Some(&mut Rng::new(1)));
    assert_eq!(
        max_diff(&logits(&m, None), &reference),
        0.0,
        "evaluation dropped positions"
    );
    let a = logits(&m, Some(&mut Rng::new(1)));
    assert_eq!(max_diff(&a, &logits(&m, Some(&mut Rng::new(1)))), 0.0);
    assert!(
        max_diff(&a, &logits(&m, Some(&mut Rng::new(2)))) > 1e-4,
        "another seed drew the same positional mask"
    );
    assert!(
        max_diff(&a, &reference) > 1e-4,
        "training dropped no position"
    );
}

#[test]
fn the_positional_mask_is_drawn_before_the_solve_so_the_solve_finds_a_fixed_point() {
    no_grad(|| {
        let mut cfg = transformer_cfg(0.0);
        cfg.pos_dropout = 0.5;
        let mut rng = Rng::new(11);
        let mut store = ParamStore::<f64>::new();
        let cell = DeqTransformerCell::new(&mut store, "cell", &cfg, &mut rng);
        let p = store.constants();
        let dropped = cell.prepare(&p, None, LEN, Some(&mut Rng::new(4)));
        let clean = cell.prepare(&p, None, LEN, None);
        // Only the projected positions (entry 1) change.
        for (i, (a, b)) in dropped.iter().zip(&clean).enumerate() {
            let diff = max_diff(a.value(), b.value());
            assert_eq!(diff > 0.0, i == 1, "prepared entry {i} differs by {diff:e}");
        }
        let u = Var::constant(Tensor::randn(&[BATCH, LEN, 3 * D], 0.5, &mut rng));
        let step = cell.step::<f64>(BATCH, None);
        let res = deq(
            &step,
            &u,
            &dropped,
            &Tensor::zeros(&[BATCH, LEN, D]),
            &tight(),
        );
        let resid = max_diff(step.apply(&res.z, &u, &dropped).value(), res.z.value());
        assert!(
            resid < 1e-9,
            "f(z*) - z* = {resid:e} with the dropped positions"
        );
    });
}

/// A Transformer cell whose only dropout is on the attention probabilities.
fn attention_only(p: f64) -> (DeqTransformerCell, Vec<Var<f64>>, Var<f64>, Var<f64>) {
    let mut cfg = transformer_cfg(0.0);
    cfg.att_dropout = p;
    cell_and_inputs_for(&cfg)
}

#[test]
fn attention_dropout_keeps_one_mask_per_pass_draws_new_ones_per_step_and_none_in_evaluation() {
    no_grad(|| {
        let (cell, eff, u, z) = attention_only(0.2);
        let (plain, _, _, _) = attention_only(0.0);
        let mut rng = Rng::new(5);
        let step = cell.step::<f64>(BATCH, Some(&mut rng));
        let (a, b) = (step.apply(&z, &u, &eff), step.apply(&z, &u, &eff));
        assert_eq!(
            max_diff(a.value(), b.value()),
            0.0,
            "a second call drew a new mask"
        );
        let res = deq(&step, &u, &eff, &Tensor::zeros(&[BATCH, LEN, D]), &tight());
        let resid = max_diff(step.apply(&res.z, &u, &eff).value(), res.z.value());
        assert!(resid < 1e-9, "f(z*) - z* = {resid:e} for the same mask");
        let next = cell.step::<f64>(BATCH, Some(&mut rng)).apply(&z, &u, &eff);
        assert!(
            max_diff(a.value(), next.value()) > 1e-3,
            "the next step drew the same mask"
        );
        let reference = plain
            .step::<f64>(BATCH, Some(&mut Rng::new(5)))
            .apply(&z, &u, &eff);
        assert!(
            max_diff(a.value(), reference.value()) > 1e-3,
            "training dropped nothing"
        );
        let eval = cell.step::<f64>(BATCH, None).apply(&z, &u, &eff);
        assert_eq!(
            max_diff(eval.value(), reference.value()),
            0.0,
            "evaluation dropped"
        );
    });
}

#[test]
fn trellis_weight_drop_draws_one_kernel_mask_per_pass_and_none_in_evaluation() {
    let cfg = TrellisConfig {
        weight_norm: true,
        hidden: 10,
        dropout: 0.0,
        weight_drop: 0.3,
    };
    let mut store = ParamStore::<f64>::new();
    let cell = TrellisNetCell::new(&mut store, "cell", &cfg, &mut Rng::new(11));
    let p = store.constants();
    let clean = cell.prepare(&p, None);
    let a = cell.prepare(&p, Some(&mut Rng::new(4)));
    assert_eq!(
        max_diff(
            a[0].value(),
            cell.prepare(&p, Some(&mut Rng::new(4)))[0].value()
        ),
        0.0
    );
    assert!(
        max_diff(
            a[0].value(),
            cell.prepare(&p, Some(&mut Rng::new(5)))[0].value()
        ) > 1e-3
    );
    // The bias is untouched; each kernel entry is dropped or scaled by 1/(1 − p).
    assert_eq!(max_diff(a[1].value(), clean[1].value()), 0.0);
    let (w, w0) = (a[0].value().data(), clean[0].value().data());
    let dropped = w.iter().filter(|&&v| v == 0.0).count() as f64 / w.len() as f64;
    assert!(
        (dropped - 0.3).abs() < 0.06,
        "dropped fraction {dropped} of {}",
        w.len()
    );
    for (&v, &v0) in w.iter().zip(w0) {
        assert!(v == 0.0 || (v - v0 / 0.7).abs() < 1e-12, "{v} from {v0}");
    }
}
