//! The run configuration: presets follow their rules, `validate()` refuses every inconsistent
//! setting naming it, JSON round-trips (what `--print-config` writes, `--config` reads),
//! configurations from before the evaluation protocol still load, the frozen yardstick presets
//! in `benches/presets/` parse, and the size checks refuse segments the data cannot hold.

use deq_models::config::{EvalConfig, TrainConfig, PRESETS};
use deq_models::data::{batchify, Corpus, Level};
use deq_models::score::EvalSplit;
use deq_models::sizes;
use deq_models::train::Trainer;
use deq_models::CellConfig;

fn preset(name: &str) -> TrainConfig {
    let mut cfg = TrainConfig::preset(name).unwrap();
    cfg.model.vocab = 10_000;
    cfg
}

#[test]
fn presets_follow_the_schedule_rules_and_validate() {
    for name in PRESETS {
        let c = preset(name);
        c.validate().unwrap();
        assert_eq!(c.schedule.total, c.steps, "{name}");
        assert_eq!(c.schedule.warmup, c.steps / 20, "{name}");
        assert_eq!(c.schedule.min_lr, c.schedule.lr / 20.0, "{name}");
        assert_eq!(c.eval_every, c.steps / 4, "{name}");
        assert!(c.pretrain_steps <= c.steps / 5, "{name}");
    }
}

#[test]
fn set_steps_plans_the_run_and_extend_to_only_moves_its_end() {
    let mut c = preset("tiny");
    c.set_steps(100);
    assert_eq!(
        (c.steps, c.schedule.total, c.schedule.warmup, c.eval_every),
        (100, 100, 5, 25)
    );
    assert_eq!(
        c.pretrain_steps, 20,
        "pre-training is capped at a fifth of the run"
    );
    c.set_steps(10);
    assert_eq!(c.schedule.warmup, 1, "at least one warm-up step");
    let mut c = preset("tiny");
    let before = c.clone();
    c.extend_to(3000);
    assert_eq!((c.steps, c.schedule.total), (3000, 3000));
    assert_eq!(c.schedule.warmup, before.schedule.warmup);
    assert_eq!(c.eval_every, before.eval_every);
    assert_eq!(c.pretrain_steps, before.pretrain_steps);
    c.validate().unwrap();
    let mut c = preset("tiny");
    c.set_lr(0.01);
    assert_eq!((c.schedule.lr, c.schedule.min_lr), (0.01, 0.01 / 20.0));
}

#[test]
fn validate_refuses_each_inconsistent_setting_naming_it() {
    type Mutation = fn(&mut TrainConfig);
    let cases: [(Mutation, &str); 11] = [
        (|c| c.schedule.total = c.steps + 1, "schedule.total"),
        (|c| c.schedule.min_lr = 2.0 * c.schedule.lr, "min_lr"),
        (|c| c.schedule.min_lr = -1e-9, "min_lr"),
        (|c| c.adam.beta1 = 1.0, "adam.beta1"),
        (|c| c.adam.beta2 = 1.5, "adam.beta2"),
        (|c| c.adam.eps = 0.0, "adam.eps"),
        (|c| c.clip = -0.25, "clip"),
        (|c| c.clip = f64::NAN, "clip"),
        (|c| c.eval.batch = 0, "eval.batch"),
        (|c| c.eval.seq_len = 0, "eval.seq_len"),
        (|c| c.steps = 0, "steps"),
    ];
    for (mutate, field) in cases {
        let mut c = preset("tiny");
        mutate(&mut c);
        let err = c.validate().expect_err(field);
        assert!(err.contains(field), "{field}: {err}");
    }
    let mut c = preset("trellis-tiny");
    c.eval.mem_len = Some(8);
    let err = c.validate().unwrap_err();
    assert!(err.contains("eval.mem_len"), "{err}");
}

#[test]
fn configurations_round_trip_through_json() {
    for name in PRESETS {
        let c = preset(name);
        let json = serde_json::to_string_pretty(&c).unwrap();
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c, "{name}");
    }
    let mut v = serde_json::to_value(preset("tiny")).unwrap();
    v["eval"]["bach"] = serde_json::json!(3);
    let err = serde_json::from_value::<TrainConfig>(v).unwrap_err();
    assert!(err.to_string().contains("bach"), "{err}");
}

#[test]
fn a_configuration_from_before_the_evaluation_protocol_loads_evaluating_like_its_training() {
    let mut v = serde_json::to_value(preset("tiny")).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("eval");
    obj.insert("eval_segments".into(), serde_json::json!(40));
    let c: TrainConfig = serde_json::from_value(v).unwrap();
    assert_eq!(
        c.eval,
        EvalConfig {
            batch: 16,
            seq_len: 32,
            mem_len: Some(16)
        }
    );
    assert_eq!(c, preset("tiny"));
}

/// `benches/presets/*.json` are the presets as they were when issue 15 began, kept as a frozen
/// yardstick: they must stay loadable, and differ from today's presets only in what was
/// retuned on purpose: `tiny`'s steps (4000 instead of 1500), the input embedding's
/// `√d_embed` scale of both (files without the field load with it off) and `ptb-small`'s
/// output dropout (0.1; files without the field load with 0).
#[test]
fn the_frozen_yardstick_presets_load_and_validate() {
    for name in ["tiny", "ptb-small"] {
        let path = format!(
            "{}/../benches/presets/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let c: TrainConfig = serde_json::from_str(&text).unwrap();
        c.validate().unwrap();
        let mut now = preset(name);
        if name == "tiny" {
            assert_eq!(c.steps, 1500);
            now.set_steps(c.steps);
        }
        assert!(!c.model.emb_scale && now.model.emb_scale, "{name}");
        now.model.emb_scale = false;
        assert_eq!(c.model.out_dropout, 0.0);
        now.model.out_dropout = 0.0;
        assert_eq!(c, now, "{path} differs from the preset {name}");
    }
}

#[test]
fn segments_longer_than_a_stream_are_refused_before_allocation() {
    let mut c = preset("tiny");
    // The bundled PTB's sizes.
    let (train, valid, test) = (929_589, 73_760, 82_430);
    sizes::check_data(&c, train, valid, test).unwrap();
    c.seq_len = 100_000_000;
    let err = sizes::check_data(&c, train, valid, test).unwrap_err();
    assert!(err.contains("seq_len") && err.contains("58099"), "{err}");
    let mut c = preset("tiny");
    c.eval.seq_len = 5000;
    let err = sizes::check_data(&c, train, valid, test).unwrap_err();
    assert!(
        err.contains("eval.seq_len") && err.contains("validation"),
        "{err}"
    );
    let mut c = preset("tiny");
    c.batch = train;
    let err = sizes::check_data(&c, train, valid, test).unwrap_err();
    assert!(err.contains("batch"), "{err}");
    // The step the old code tried to allocate: 16 streams of 58099 tokens, 2 heads.
    let mut c = preset("tiny");
    c.seq_len = 58_098;
    let bound = sizes::train_step_bound(&c);
    assert!(bound.bytes > 4e11, "{bound:?}");
    assert!(bound.largest.contains("attention"), "{bound:?}");
    assert!(sizes::train_step_bound(&preset("tiny")).bytes < 1e9);
}

fn small_corpus() -> Corpus {
    let text: String = (0..200)
        .map(|i| format!("w{} w{} w{}\n", i % 5, (i * 3 + 1) % 5, (i / 5) % 5))
        .collect();
    Corpus::from_texts(&text, &text, &text[..text.len() / 2], Level::Word).unwrap()
}

fn small_config(name: &str, vocab: usize) -> TrainConfig {
    let mut c = TrainConfig::preset(name).unwrap();
    c.model.vocab = vocab;
    c.model.d_embed = 16;
    match &mut c.model.cell {
        CellConfig::Transformer(t) => {
            t.d_model = 16;
            t.d_inner = 32;
            t.mem_len = 6;
        }
        CellConfig::Trellisnet(t) => t.hidden = 16,
    }
    c.batch = 3;
    c.seq_len = 8;
    c.eval = EvalConfig::like_training(&c.model, 3, 8);
    c.validate().unwrap();
    c
}

/// The evaluation protocol with the training batch, segment and memory is exactly the old
/// whole-split evaluation, and counts what it scores: `B·(L − 1)` tokens.
#[test]
fn scoring_a_split_matches_the_whole_split_evaluation_and_counts_its_tokens() {
    let corpus = small_corpus();
    for name in ["tiny", "trellis-tiny"] {
        let cfg = small_config(name, corpus.vocab.len());
        let trainer = Trainer::new(cfg.clone());
        let split = EvalSplit::new(&corpus.valid, &cfg.eval).unwrap();
        let score = split.score(&trainer.model, &cfg);
        let old = trainer.evaluate(&batchify(&corpus.valid, 3).unwrap(), 0);
        assert_eq!(score.loss.to_bits(), old.to_bits(), "{name}");
        let len = corpus.valid.len() / 3;
        assert_eq!(score.scored, 3 * (len - 1), "{name}");
        assert_eq!(score.tokens, corpus.valid.len());
        assert_eq!(score.unscored(), corpus.valid.len() - 3 * (len - 1));
        assert!(score
            .describe()
            .contains(&format!("{} of {}", score.scored, score.tokens)));
    }
    // Another memory length changes the figure (the DEQ-Transformer attends further back).
    let mut cfg = small_config("tiny", corpus.vocab.len());
    let trainer = Trainer::new(cfg.clone());
    let split = EvalSplit::new(&corpus.valid, &cfg.eval).unwrap();
    let base = split.score(&trainer.model, &cfg);
    cfg.eval.mem_len = Some(0);
    let none = split.score(&trainer.model, &cfg);
    assert_eq!(none.mem_len, Some(0));
    assert_ne!(none.loss, base.loss);
    assert_eq!(none.scored, base.scored);
}

/// The score reports how far the evaluation's forward solves are from equilibrium: one entry
/// per segment, and a tighter solve (more iterations, lower tolerance) gives a lower residual.
#[test]
fn scoring_reports_the_evaluation_forward_residual() {
    let corpus = small_corpus();
    let mut cfg = small_config("tiny", corpus.vocab.len());
    let trainer = Trainer::new(cfg.clone());
    let split = EvalSplit::new(&corpus.valid, &cfg.eval).unwrap();
    let segments = (corpus.valid.len() / 3 - 1).div_ceil(cfg.eval.seq_len);
    cfg.eval_deq.forward.max_iter = 2;
    cfg.eval_deq.forward.tol = 1e-12;
    let loose = split.score(&trainer.model, &cfg).solve;
    cfg.eval_deq.forward.max_iter = 30;
    cfg.eval_deq.forward.tol = 1e-6;
    let tight = split.score(&trainer.model, &cfg).solve;
    for s in [&loose, &tight] {
        assert_eq!(s.segments, segments);
        assert!(s.mean_rel > 0.0 && s.mean_rel <= s.max_rel, "{s:?}");
    }
    assert_eq!(loose.mean_iterations, 2.0);
    assert!(tight.mean_iterations > 2.0, "{tight:?}");
    assert!(
        tight.max_rel < loose.mean_rel / 10.0,
        "30 iterations to 1e-6 should beat 2 by far: {loose:?} vs {tight:?}"
    );
    assert!(tight.describe().starts_with("forward residual"));
}

/// The Jacobian regularisation settings: off in every preset but `ptb-1h` (weight 0.3) and in a
/// configuration written without them; out-of-range values are errors naming the field.
#[test]
fn jacobian_regularisation_is_off_by_default_and_validated() {
    for name in PRESETS {
        assert_eq!(preset(name).jac.enabled(), name == "ptb-1h", "{name}");
    }
    assert_eq!(preset("ptb-1h").jac.weight, 0.3);
    let mut json = serde_json::to_value(preset("tiny")).unwrap();
    json.as_object_mut().unwrap().remove("jac");
    let c: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(c.jac, preset("tiny").jac);
    for (field, set) in [
        (
            "jac.weight",
            (|c: &mut TrainConfig| c.jac.weight = -1.0) as fn(&mut TrainConfig),
        ),
        ("jac.weight", |c| c.jac.weight = f64::NAN),
        ("jac.freq", |c| c.jac.freq = 1.5),
        ("jac.n_vecs", |c| c.jac.n_vecs = 0),
    ] {
        let mut c = preset("tiny");
        set(&mut c);
        let err = c.validate().unwrap_err();
        assert!(err.contains(field), "{field}: {err}");
    }
}
