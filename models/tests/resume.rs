//! Checkpoints restore a run exactly: a round trip is bit-identical, and N steps, save, load,
//! M more steps give the same losses as N + M steps straight.

use deq_models::checkpoint::{checkpoint_from_bytes, checkpoint_to_bytes};
use deq_models::data::{batchify, Corpus, Level};
use deq_models::train::{TrainConfig, Trainer};
use std::path::Path;

fn corpus() -> Corpus {
    let words = ["alpha", "beta", "gamma", "delta", "eps", "zeta"];
    let text: String = (0..300)
        .map(|i| {
            format!(
                "{} {} {}\n",
                words[i % 6],
                words[(i * 5 + 1) % 6],
                words[(i / 6) % 6]
            )
        })
        .collect();
    Corpus::from_texts(&text, &text, &text, Level::Word).unwrap()
}

fn config(preset: &str, vocab: usize) -> TrainConfig {
    let mut cfg = TrainConfig::preset(preset).unwrap();
    cfg.model.vocab = vocab;
    cfg.model.d_embed = 16;
    match &mut cfg.model.cell {
        deq_models::CellConfig::Transformer(c) => {
            c.d_model = 16;
            c.d_inner = 32;
            c.mem_len = 6;
            c.dropout = 0.1;
        }
        deq_models::CellConfig::Trellisnet(c) => {
            c.hidden = 16;
            c.dropout = 0.1;
        }
    }
    cfg.model.emb_dropout = 0.1;
    cfg.batch = 3;
    cfg.seq_len = 8;
    cfg.steps = 12;
    cfg.pretrain_steps = 3;
    cfg.schedule.total = 12;
    cfg.schedule.warmup = 2;
    cfg.validate().unwrap();
    cfg
}

fn resume_matches(preset: &str) {
    let corpus = corpus();
    let data = batchify(&corpus.train, 3).unwrap();
    let cfg = config(preset, corpus.vocab.len());
    let mut straight = Trainer::new(cfg.clone());
    let expected: Vec<f64> = (0..12).map(|_| straight.train_step(&data).loss).collect();

    let mut first = Trainer::new(cfg);
    let mut losses: Vec<f64> = (0..5).map(|_| first.train_step(&data).loss).collect();
    let bytes = checkpoint_to_bytes(&first.to_checkpoint(&corpus.vocab)).unwrap();
    drop(first);
    let ck = checkpoint_from_bytes(&bytes, Path::new("<memory>")).unwrap();
    let mut resumed = Trainer::from_checkpoint(&ck, Path::new("<memory>"), &corpus.vocab).unwrap();
    losses.extend((0..7).map(|_| resumed.train_step(&data).loss));
    assert_eq!(
        losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        expected.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        "resumed losses {losses:?} differ from straight {expected:?}"
    );
    // And the weights are identical at the end.
    for (a, b) in resumed
        .model
        .store
        .values()
        .iter()
        .zip(straight.model.store.values())
    {
        assert_eq!(a, b);
    }
}

#[test]
fn transformer_resume_reproduces_the_straight_run() {
    resume_matches("tiny");
}

#[test]
fn trellisnet_resume_reproduces_the_straight_run() {
    resume_matches("trellis-tiny");
}

#[test]
fn checkpoint_round_trip_is_bit_identical() {
    let corpus = corpus();
    let data = batchify(&corpus.train, 3).unwrap();
    let mut t = Trainer::new(config("tiny", corpus.vocab.len()));
    for _ in 0..4 {
        t.train_step(&data);
    }
    let ck = t.to_checkpoint(&corpus.vocab);
    let bytes = checkpoint_to_bytes(&ck).unwrap();
    let back = checkpoint_from_bytes(&bytes, Path::new("<memory>")).unwrap();
    assert_eq!(checkpoint_to_bytes(&back).unwrap(), bytes);
    let restored = Trainer::from_checkpoint(&back, Path::new("<memory>"), &corpus.vocab).unwrap();
    for (a, b) in restored
        .model
        .store
        .values()
        .iter()
        .zip(t.model.store.values())
    {
        let bits = |x: &deq_autograd::Tensor<f32>| {
            x.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(bits(a), bits(b));
    }
    assert_eq!(restored.step, t.step);
    assert_eq!(restored.position, t.position);
    assert_eq!(restored.rng.state(), t.rng.state());
}

#[test]
fn a_checkpoint_refuses_another_vocabulary() {
    let corpus = corpus();
    let t = Trainer::new(config("tiny", corpus.vocab.len()));
    let ck = t.to_checkpoint(&corpus.vocab);
    let other = Corpus::from_texts("x y z\n", "x\n", "y\n", Level::Word).unwrap();
    let err = Trainer::from_checkpoint(&ck, Path::new("ck.safetensors"), &other.vocab)
        .err()
        .expect("another vocabulary must be refused");
    assert!(err.to_string().contains("vocabulary"), "{err}");
}
