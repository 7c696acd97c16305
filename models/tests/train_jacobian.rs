//! Jacobian regularisation as a training option: a step with the penalty reports it and
//! changes the gradient, the default run never draws it, and training with a large weight
//! keeps the equilibrium's Jacobian smaller than training without.

use deq_models::data::{batchify, Batched, Corpus, Level};
use deq_models::train::{TrainConfig, Trainer};
use deq_models::CellConfig;

fn corpus() -> Corpus {
    let words = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let text: String = (0..600)
        .map(|i| format!("{} {}\n", words[i % 8], words[(i * 3 + i / 8) % 8]))
        .collect();
    Corpus::from_texts(&text, &text, &text, Level::Word).expect("corpus")
}

fn config(corpus: &Corpus, preset: &str, steps: usize) -> TrainConfig {
    let mut cfg = TrainConfig::preset(preset).unwrap();
    cfg.model.vocab = corpus.vocab.len();
    cfg.model.d_embed = 16;
    match &mut cfg.model.cell {
        CellConfig::Transformer(c) => {
            c.d_model = 16;
            c.d_inner = 32;
            c.mem_len = 4;
        }
        CellConfig::Trellisnet(c) => c.hidden = 16,
    }
    cfg.batch = 4;
    cfg.seq_len = 8;
    cfg.set_steps(steps);
    cfg.pretrain_steps = 0;
    cfg.eval = deq_models::config::EvalConfig::like_training(&cfg.model, 4, 8);
    cfg.validate().unwrap();
    cfg
}

fn run(cfg: TrainConfig, data: &Batched) -> (Trainer, Vec<deq_models::train::StepMetrics>) {
    let mut t = Trainer::new(cfg);
    let m = (0..t.cfg.steps).map(|_| t.train_step(data)).collect();
    (t, m)
}

#[test]
fn a_regularised_step_reports_the_penalty_and_changes_the_update() {
    let corpus = corpus();
    let data = batchify(&corpus.train, 4).unwrap();
    for preset in ["tiny", "trellis-tiny"] {
        let plain = config(&corpus, preset, 3);
        let mut reg = plain.clone();
        reg.jac.weight = 5.0;
        reg.jac.freq = 1.0;
        let (a, ma) = run(plain, &data);
        let (b, mb) = run(reg, &data);
        assert!(
            ma.iter().all(|m| m.jac_loss.is_none()),
            "{preset}: off by default"
        );
        for m in &mb {
            let j = m
                .jac_loss
                .unwrap_or_else(|| panic!("{preset}: step {} lacks it", m.step));
            assert!(j.is_finite() && j > 0.0, "{preset}: penalty {j}");
        }
        // The first step's task loss is the same (same weights, data and dropout), the
        // update is not.
        assert_eq!(ma[0].loss.to_bits(), mb[0].loss.to_bits(), "{preset}");
        let (wa, wb) = (a.model.store.values(), b.model.store.values());
        assert!(
            wa.iter().zip(wb).any(|(x, y)| x.to_vec() != y.to_vec()),
            "{preset}: the penalty changed no weight"
        );
    }
}

#[test]
fn the_frequency_decides_how_many_steps_add_the_penalty() {
    let corpus = corpus();
    let data = batchify(&corpus.train, 4).unwrap();
    let mut cfg = config(&corpus, "tiny", 40);
    cfg.jac.weight = 1.0;
    cfg.jac.freq = 0.35;
    let (_, m) = run(cfg.clone(), &data);
    let with = m.iter().filter(|m| m.jac_loss.is_some()).count();
    assert!(
        (5..=24).contains(&with),
        "{with} of 40 steps at frequency 0.35"
    );
    // The draws are a function of the step: a second run draws the same steps.
    let (_, again) = run(cfg, &data);
    let pattern = |m: &[deq_models::train::StepMetrics]| {
        m.iter().map(|m| m.jac_loss.is_some()).collect::<Vec<_>>()
    };
    assert_eq!(pattern(&m), pattern(&again));
}

#[test]
fn training_with_a_large_weight_keeps_the_jacobian_smaller() {
    let corpus = corpus();
    let data = batchify(&corpus.train, 4).unwrap();
    let plain = config(&corpus, "tiny", 60);
    let mut reg = plain.clone();
    reg.jac.weight = 20.0;
    reg.jac.freq = 1.0;
    let (_, ma) = run(plain.clone(), &data);
    let (_, mb) = run(reg.clone(), &data);
    // Measure both final models' penalties the same way: one more regularised step each,
    // whose reported penalty is taken before the update.
    let tail = |m: &[deq_models::train::StepMetrics]| {
        m.iter()
            .rev()
            .take(10)
            .filter_map(|m| m.jac_loss)
            .sum::<f64>()
            / 10.0
    };
    let reg_end = tail(&mb);
    // The unregularised run reports nothing; rerun its last steps with the penalty measured
    // at weight ~0 (it does not change the update measurably).
    let mut probe = plain;
    probe.jac.weight = 1e-12;
    probe.jac.freq = 1.0;
    let (_, mp) = run(probe, &data);
    let plain_end = tail(&mp);
    println!("‖J‖²/N over the last 10 steps: plain {plain_end:.4}, regularised {reg_end:.4}");
    assert!(ma.iter().all(|m| !m.skipped) && mb.iter().all(|m| !m.skipped));
    assert!(
        reg_end < 0.7 * plain_end,
        "regularised {reg_end} not below plain {plain_end}"
    );
}
