//! `deq generate`: sample a continuation of a prompt from a checkpoint.

use super::args::{DataArgs, MachineArgs};
use super::{data_source, existing_file};
use clap::Args;
use deq_autograd::{no_grad, Rng};
use deq_models::checkpoint::load_checkpoint;
use deq_models::data::Level;
use deq_models::error::{DeqError, Result};
use deq_models::train::Trainer;
use deq_models::Memory;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `deq generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The checkpoint to sample from.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to continue (words outside the vocabulary become `<unk>`).
    #[arg(long, default_value = "the")]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 40)]
    tokens: usize,
    /// Softmax temperature (> 0).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[command(flatten)]
    data: DataArgs,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// Runs `deq generate`.
pub fn run(a: GenerateArgs) -> Result<ExitCode> {
    if !(a.temperature.is_finite() && a.temperature > 0.0) {
        return Err(DeqError::config(format!(
            "temperature must be > 0, got {}",
            a.temperature
        )));
    }
    a.machine.device.open()?;
    existing_file(&a.checkpoint, "checkpoint")?;
    let ck = load_checkpoint(&a.checkpoint)?;
    let level = data_source::level(a.data.level_or_default());
    let (corpus, _) = data_source::load(&a.data)?;
    let vocab = &corpus.vocab;
    let mut trainer = Trainer::from_checkpoint(&ck, &a.checkpoint, vocab)?;
    trainer.to_device(a.machine.device)?;
    let symbols: Vec<String> = match level {
        Level::Word => a.prompt.split_whitespace().map(str::to_string).collect(),
        Level::Char => a
            .prompt
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(String::from)
            .collect(),
    };
    let mut context: Vec<usize> = symbols
        .iter()
        .map(|s| vocab.id(s).or(vocab.unk()).unwrap_or(vocab.eos()))
        .collect();
    if context.is_empty() {
        context.push(vocab.eos());
    }
    let mut rng = Rng::new(a.seed);
    let p = trainer.model.store.constants();
    let window = trainer.cfg.seq_len;
    let mut out = Vec::with_capacity(a.tokens);
    for _ in 0..a.tokens {
        let start = context.len().saturating_sub(window);
        let ctx = &context[start..];
        let logits = no_grad(|| {
            trainer
                .model
                .logits(&p, ctx, 1, &Memory::default(), &trainer.cfg.eval_deq, None)
                .0
        });
        let v = vocab.len();
        let values = logits.value().host_values();
        let last = &values[(ctx.len() - 1) * v..ctx.len() * v];
        let max = last.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let weights: Vec<f64> = last
            .iter()
            .map(|&x| ((x as f64 - max) / a.temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut r = rng.uniform() * total;
        let mut next = v - 1;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                next = i;
                break;
            }
            r -= w;
        }
        context.push(next);
        out.push(next);
    }
    let sep = if level == Level::Word { " " } else { "" };
    let text: Vec<&str> = out
        .iter()
        .map(|&i| {
            if i == vocab.eos() {
                "\n"
            } else {
                vocab.token(i)
            }
        })
        .collect();
    println!("{}{sep}{}", a.prompt, text.join(sep));
    Ok(ExitCode::SUCCESS)
}
