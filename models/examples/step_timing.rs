use deq_autograd::{Tape, Tensor, Var};
use deq_models::data::{batchify, Corpus};
use deq_models::train::{TrainConfig, Trainer};
use deq_models::Memory;
use std::time::Instant;
fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/ptb");
    let corpus = Corpus::load_dir(&dir, deq_models::data::Level::Word).unwrap();
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.model.vocab = corpus.vocab.len();
    let data = batchify(&corpus.train, cfg.batch).unwrap();
    let t = Trainer::new(cfg.clone());
    let (inputs, targets, _) = data.segment(0, cfg.seq_len).unwrap();
    for mode in ["pretrain", "deq"] {
        let mut dc = cfg.train_deq.clone();
        if mode == "pretrain" {
            dc.mode = deq_solvers::BackwardMode::Unrolled { k: 2 };
        }
        for _ in 0..3 {
            let tape = Tape::new();
            let p = t.model.store.leaves(&tape);
            let t0 = Instant::now();
            let (logits, _, _) =
                t.model
                    .logits(&p, &inputs, cfg.batch, &Memory::default(), &dc, None);
            let t1 = Instant::now();
            let loss = logits.cross_entropy(&targets);
            let t2 = Instant::now();
            let wrt: Vec<&Var<f32>> = p.iter().collect();
            let g = tape.vjp(&[&loss], &[&Tensor::scalar(1.0)], &wrt);
            let t3 = Instant::now();
            let d = logits.value().data();
            let (mn, mx) = d
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            println!(
                "{mode}: logits {:?} ce {:?} bwd {:?} shape {:?} range {mn} {mx} {}",
                t1 - t0,
                t2 - t1,
                t3 - t2,
                logits.shape(),
                g.len()
            );
        }
    }
}
