//! Where the text comes from: `--data DIR`, or the PTB corpus embedded in the binary.

use super::LevelArg;
use deq_models::data::{Corpus, Level};
use deq_models::error::Result;
use std::path::PathBuf;

const PTB_TRAIN: &str = include_str!("../../data/ptb/ptb.train.txt");
const PTB_VALID: &str = include_str!("../../data/ptb/ptb.valid.txt");
const PTB_TEST: &str = include_str!("../../data/ptb/ptb.test.txt");

/// Converts the command-line level.
pub fn level(arg: LevelArg) -> Level {
    match arg {
        LevelArg::Word => Level::Word,
        LevelArg::Char => Level::Char,
    }
}

/// Loads `dir` when given, else the bundled PTB (word level only; PTB char lives in
/// `../shared`-style directories passed with `--data`).
pub fn load(dir: Option<&PathBuf>, level: Level) -> Result<(Corpus, String)> {
    match dir {
        Some(d) => Ok((Corpus::load_dir(d, level)?, d.display().to_string())),
        None => {
            if level == Level::Char {
                return Err(deq_models::error::DeqError::config(
                    "the bundled corpus is word-level PTB; pass --data DIR for character-level data",
                ));
            }
            Ok((
                Corpus::from_texts(PTB_TRAIN, PTB_VALID, PTB_TEST, Level::Word)?,
                "bundled PTB".to_string(),
            ))
        }
    }
}
