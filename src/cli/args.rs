//! Arguments shared by several commands, defined once and flattened into each.

use super::LevelArg;
use clap::Args;
use deq_autograd::Device;
use std::path::PathBuf;

/// Where the text comes from (`train`, `eval`, `generate`).
#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Directory with train/valid/test text files (default: the bundled PTB).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Tokenisation level [default: word].
    #[arg(long, value_enum)]
    pub level: Option<LevelArg>,
}

impl DataArgs {
    /// The level asked for, word level by default.
    pub fn level_or_default(&self) -> LevelArg {
        self.level.unwrap_or(LevelArg::Word)
    }
}

/// Where the computation runs (`train`, `eval`, `generate`, `bench`).
#[derive(Args, Debug, Clone)]
pub struct MachineArgs {
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}
