//! `deq eval`.

use super::{data_source, existing_file, LevelArg};
use clap::Args;
use deq_autograd::Device;
use deq_models::checkpoint::load_checkpoint;
use deq_models::data::batchify;
use deq_models::error::Result;
use deq_models::train::{evaluate, Trainer};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `deq eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The checkpoint to evaluate.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory with train/valid/test text files (default: the bundled PTB).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokenisation level.
    #[arg(long, value_enum, default_value = "word")]
    level: LevelArg,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
}

/// Runs `deq eval`.
pub fn run(a: EvalArgs) -> Result<ExitCode> {
    a.device.open()?;
    existing_file(&a.checkpoint, "checkpoint")?;
    let ck = load_checkpoint(&a.checkpoint)?;
    let (corpus, _) = data_source::load(a.data.as_ref(), data_source::level(a.level))?;
    let mut trainer = Trainer::from_checkpoint(&ck, &a.checkpoint, &corpus.vocab)?;
    trainer.to_device(a.device)?;
    let cfg = &trainer.cfg;
    for (name, split) in [("valid", &corpus.valid), ("test", &corpus.test)] {
        let data = batchify(split, cfg.batch)?;
        let loss = evaluate(&trainer.model, cfg, &data, 0);
        println!("{name}: loss {loss:.4}, perplexity {:.2}", loss.exp());
    }
    Ok(ExitCode::SUCCESS)
}
