//! Command-line interface: argument definitions and dispatch.

mod data_source;
mod eval;
mod generate;
mod gradcheck;
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
#[derive(Clone, Copy, Debug, ValueEnum)]
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
    Train(train::TrainArgs),
    /// Perplexity of a checkpoint on the validation and test splits.
    Eval(eval::EvalArgs),
    /// Sample text from a checkpoint.
    Generate(generate::GenerateArgs),
    /// Check gradients (ops, implicit layer, both language models) against finite differences.
    Gradcheck(gradcheck::GradcheckArgs),
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Gradcheck(a) => gradcheck::run(a),
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
