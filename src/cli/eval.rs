//! `deq eval`.

use super::args::{DataArgs, MachineArgs};
use super::{data_source, existing_file, machine};
use clap::Args;
use deq_models::checkpoint::load_checkpoint;
use deq_models::error::{DeqError, Result};
use deq_models::score::EvalSplit;
use deq_models::sizes;
use deq_models::train::Trainer;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `deq eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The checkpoint to evaluate.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Evaluation streams [default: the run's `eval.batch`].
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per evaluation segment [default: the run's `eval.seq_len`].
    #[arg(long)]
    seq_len: Option<usize>,
    /// DEQ-Transformer: positions of attention memory [default: the run's `eval.mem_len`].
    #[arg(long)]
    mem_len: Option<usize>,
    /// The forward solve's iteration cap [default: the run's `eval_deq.forward.max_iter`]:
    /// raise it (with --tol) until the printed residual shows a converged solve.
    #[arg(long)]
    iters: Option<usize>,
    /// The forward solve's tolerance [default: the run's `eval_deq.forward.tol`].
    #[arg(long)]
    tol: Option<f64>,
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// Runs `deq eval`: the loss and perplexity of the validation and test splits under the run's
/// evaluation protocol (or the one given by `--batch`, `--seq-len`, `--mem-len`, and the
/// forward solve's `--iters`, `--tol`), with what was scored and how far the solve got.
pub fn run(a: EvalArgs) -> Result<ExitCode> {
    let device = a.machine.device;
    device.open()?;
    existing_file(&a.checkpoint, "checkpoint")?;
    let ck = load_checkpoint(&a.checkpoint)?;
    let (corpus, _) = data_source::load(&a.data)?;
    let mut trainer = Trainer::from_checkpoint(&ck, &a.checkpoint, &corpus.vocab)?;
    let cfg = &mut trainer.cfg;
    if let Some(b) = a.batch {
        cfg.eval.batch = b;
    }
    if let Some(t) = a.seq_len {
        cfg.eval.seq_len = t;
    }
    if a.mem_len.is_some() {
        cfg.eval.mem_len = a.mem_len;
    }
    cfg.eval.validate(&cfg.model).map_err(DeqError::config)?;
    let forward = &mut cfg.eval_deq.forward;
    if let Some(n) = a.iters {
        forward.max_iter = n;
    }
    if let Some(tol) = a.tol {
        forward.tol = tol;
    }
    forward
        .validate()
        .map_err(|e| DeqError::config(format!("--iters/--tol: {e}")))?;
    sizes::check_eval_data(&cfg.eval, corpus.valid.len(), corpus.test.len())
        .map_err(DeqError::config)?;
    machine::check_fits(&sizes::eval_bound(cfg), "the evaluation", device)?;
    trainer.to_device(device)?;
    for (name, split) in [("valid", &corpus.valid), ("test", &corpus.test)] {
        let score = EvalSplit::new(split, &trainer.cfg.eval)?.score(&trainer.model, &trainer.cfg);
        println!(
            "{name}: loss {:.4}, perplexity {:.2}; {}; {}",
            score.loss,
            score.perplexity(),
            score.solve.describe(),
            score.describe()
        );
    }
    Ok(ExitCode::SUCCESS)
}
