//! Training on a tiny built-in corpus drives the loss down for both cells.

use deq_models::data::{batchify, Corpus, Level};
use deq_models::train::{TrainConfig, Trainer};

/// A small corpus with strong regularities: a word predicts its successor.
fn corpus() -> Corpus {
    let subjects = ["the cat", "a dog", "my bird", "the fox"];
    let verbs = ["sat on", "ran to", "looked at", "jumped over"];
    let objects = ["the mat", "a tree", "the river", "my house"];
    let mut lines = Vec::new();
    for i in 0..400 {
        lines.push(format!(
            "{} {} {}",
            subjects[i % 4],
            verbs[(i / 4) % 4],
            objects[(i / 16) % 4]
        ));
    }
    let text = lines.join("\n") + "\n";
    Corpus::from_texts(&text, &text, &text, Level::Word).expect("corpus")
}

fn train(preset: &str) -> (f64, f64) {
    let corpus = corpus();
    let mut cfg = TrainConfig::preset(preset).unwrap();
    cfg.model.vocab = corpus.vocab.len();
    cfg.model.d_embed = 32;
    match &mut cfg.model.cell {
        deq_models::CellConfig::Transformer(c) => {
            c.d_model = 32;
            c.d_inner = 64;
            c.mem_len = 8;
        }
        deq_models::CellConfig::Trellisnet(c) => {
            c.hidden = 32;
            // Weight normalisation makes Adam grow a kernel's scale only through its gains,
            // too slowly for 300 steps on this corpus (2.99 → 2.82 nats with it, 1.23 without);
            // on PTB it is what makes the preset's solves converge (README). Its gradients are
            // checked in lm_gradcheck.rs and lm_memory.rs.
            c.weight_norm = false;
        }
    }
    cfg.batch = 4;
    cfg.seq_len = 16;
    cfg.steps = std::env::var("STEPS")
        .map(|s| s.parse().unwrap())
        .unwrap_or(300);
    cfg.pretrain_steps = 20;
    cfg.schedule.total = cfg.steps;
    cfg.schedule.warmup = 10;
    cfg.schedule.lr = 3e-3;
    cfg.validate().unwrap();
    let data = batchify(&corpus.train, cfg.batch).unwrap();
    let mut trainer = Trainer::new(cfg);
    let first = trainer.evaluate(&data, 4);
    for _ in 0..trainer.cfg.steps {
        let m = trainer.train_step(&data);
        assert!(!m.skipped && m.loss.is_finite(), "step {}: {m:?}", m.step);
    }
    (first, trainer.evaluate(&data, 4))
}

#[test]
fn transformer_lm_loss_falls_on_a_tiny_corpus() {
    let (before, after) = train("tiny");
    println!("transformer: {before:.3} -> {after:.3}");
    assert!(after < 0.8 * before, "loss {before} -> {after}");
}

#[test]
fn trellisnet_lm_loss_falls_on_a_tiny_corpus() {
    let (before, after) = train("trellis-tiny");
    println!("trellisnet: {before:.3} -> {after:.3}");
    assert!(after < 0.8 * before, "loss {before} -> {after}");
}
