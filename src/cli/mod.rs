//! Command-line interface: argument definitions and dispatch.

mod args;
pub mod bench;
mod data_source;
mod eval;
mod generate;
mod gradcheck;
mod machine;
mod plot;
mod plot_run;
mod progress;
mod train;

use clap::{Parser, Subcommand, ValueEnum};
use deq_models::error::{DeqError, Result};
use std::path::Path;
use std::process::ExitCode;

/// Deep equilibrium models: train, evaluate and check DEQ language models.
#[derive(Parser, Debug)]
#[command(name = "deq", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Word or character level.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LevelArg {
    /// Whitespace-separated words, one `<eos>` per line.
    Word,
    /// Characters (PTB char files: space-separated symbols).
    Char,
}

/// Which DEQ cell.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ModelArg {
    /// The DEQ-Transformer.
    Transformer,
    /// The DEQ-TrellisNet.
    Trellisnet,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a DEQ language model (default: a small DEQ-Transformer on the bundled PTB).
    Train(Box<train::TrainArgs>),
    /// Perplexity of a checkpoint on the validation and test splits.
    Eval(eval::EvalArgs),
    /// Sample text from a checkpoint.
    Generate(generate::GenerateArgs),
    /// Check gradients (ops, implicit layer, both language models) against finite differences.
    Gradcheck(gradcheck::GradcheckArgs),
    /// Time the benchmark workloads W1-W3 (see ../shared/BENCH.md).
    Bench(bench::BenchArgs),
    /// Redraw a run's training.png from its metrics.jsonl.
    Plot(plot_run::PlotArgs),
}

impl Command {
    /// The worker threads the command asked for (0: rayon's default).
    fn threads(&self) -> usize {
        match self {
            Command::Train(a) => a.machine.threads,
            Command::Eval(a) => a.machine.threads,
            Command::Generate(a) => a.machine.threads,
            Command::Bench(a) => a.threads,
            Command::Gradcheck(_) | Command::Plot(_) => 0,
        }
    }
}

/// Runs one command on a worker of rayon's pool, so that the parallel kernels it starts are
/// joined by work stealing instead of waking the pool from outside for every product.
pub fn run(cli: Cli) -> Result<ExitCode> {
    set_threads(cli.command.threads())?;
    let mut out = None;
    rayon::scope(|s| s.spawn(|_| out = Some(dispatch(cli.command))));
    out.expect("the command ran")
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Gradcheck(a) => gradcheck::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Plot(a) => plot_run::run(a),
    }
}

/// Sets rayon's global pool to `threads` (0: rayon's default).
pub fn set_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Ok(());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| DeqError::config(format!("cannot start {threads} threads: {e}")))
}

/// A checkpoint path argument must name an existing file.
pub fn existing_file(path: &Path, what: &str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(DeqError::config(format!(
            "{what} {} does not exist or is not a file",
            path.display()
        )))
    }
}
