//! Where the text comes from: `--data DIR`, or the PTB corpus embedded in the binary.

use super::args::DataArgs;
use super::LevelArg;
use deq_models::data::{Corpus, Level};
use deq_models::error::{DeqError, Result};
use std::path::Path;

const PTB_TRAIN: &str = include_str!("../../data/ptb/ptb.train.txt");
const PTB_VALID: &str = include_str!("../../data/ptb/ptb.valid.txt");
const PTB_TEST: &str = include_str!("../../data/ptb/ptb.test.txt");

/// What a run's checkpoints record of its data source when it is the bundled corpus.
pub const BUNDLED: &str = "bundled PTB";

/// Converts the command-line level.
pub fn level(arg: LevelArg) -> Level {
    match arg {
        LevelArg::Word => Level::Word,
        LevelArg::Char => Level::Char,
    }
}

/// The level's name as written in checkpoints ("word", "char").
pub fn level_name(arg: LevelArg) -> &'static str {
    match arg {
        LevelArg::Word => "word",
        LevelArg::Char => "char",
    }
}

/// The level named by [`level_name`].
pub fn level_from_name(name: &str) -> Option<LevelArg> {
    match name {
        "word" => Some(LevelArg::Word),
        "char" => Some(LevelArg::Char),
        _ => None,
    }
}

/// The data source as recorded in checkpoints: [`BUNDLED`] or the directory's canonical path
/// (so that `--data ./ptb` and `--data /abs/ptb` name the same source).
pub fn identity(dir: Option<&Path>) -> String {
    match dir {
        None => BUNDLED.to_string(),
        Some(d) => std::fs::canonicalize(d)
            .unwrap_or_else(|_| d.to_path_buf())
            .display()
            .to_string(),
    }
}

/// Loads `--data DIR` when given, else the bundled PTB (word level only; PTB char lives in
/// `../shared`-style directories passed with `--data`). Returns the corpus and its
/// description for the first line of output.
pub fn load(args: &DataArgs) -> Result<(Corpus, String)> {
    let level = level(args.level_or_default());
    match &args.data {
        Some(d) => Ok((Corpus::load_dir(d, level)?, d.display().to_string())),
        None => {
            if level == Level::Char {
                return Err(DeqError::config(
                    "the bundled corpus is word-level PTB; pass --data DIR for character-level data",
                ));
            }
            Ok((
                Corpus::from_texts(PTB_TRAIN, PTB_VALID, PTB_TEST, Level::Word)?,
                BUNDLED.to_string(),
            ))
        }
    }
}
