//! Language-modelling data: vocabularies, corpora and batching.
//!
//! The pipeline follows the PyTorch / AWD-LSTM / DEQ loaders so that perplexities are
//! comparable with the paper's:
//!
//! 1. [`Vocab::build`] reads the train split line by line; every line contributes its tokens and
//!    then one `<eos>`. Ids are given in order of first appearance.
//! 2. [`Corpus::load_dir`] finds the train / valid / test files of a directory, validates them
//!    (UTF-8, no NUL bytes, not empty, lines at most [`MAX_LINE_BYTES`], at most
//!    [`MAX_VOCAB`] distinct tokens) and encodes all three with the train vocabulary.
//! 3. [`batchify`] cuts a split into `B` contiguous streams and [`Batched::segment`] serves
//!    `[B, T]` input / target windows (targets shifted by one token).
//!
//! # Tokenisation levels
//!
//! - [`Level::Word`]: whitespace-separated tokens (PTB, WikiText).
//! - [`Level::Char`]: one token per character. Mikolov's `ptb.char.*` files are already
//!   space-separated symbols (`a e r _ b a n k ...`, `_` marking word boundaries); for them the
//!   separating spaces are not tokens. Plain text (Tiny Shakespeare) keeps every character of a
//!   line, spaces included. The choice is made once from the train text: if every
//!   whitespace-separated piece of it is a single character the text is taken as pre-spaced
//!   and whitespace is dropped, otherwise whitespace characters are tokens too. The vocabulary
//!   remembers the choice (it holds a whitespace token exactly when spaces are kept), so
//!   valid / test text and a vocabulary restored from a checkpoint tokenise the same way.
//!
//! Every line, including an empty one, ends with `<eos>` at both levels (the line end is not a
//! character token; `\r\n` counts as a line end). Whitespace after the last line break is not
//! a line (Mikolov's `ptb.char` files end with `"\n "`). A UTF-8 byte-order mark at the start
//! of a file is ignored.
//!
//! All failures are [`DeqError`] values; nothing here panics on bad input.

mod batch;
mod corpus;
mod text;
mod vocab;

pub use batch::{batchify, Batched};
pub use corpus::Corpus;
pub use text::{decode_text, read_text_file};
pub use vocab::Vocab;

use crate::error::{DeqError, Result};
use std::fmt;
use std::str::FromStr;

/// The end-of-line token appended after every line.
pub const EOS: &str = "<eos>";

/// The unknown-word token; out-of-vocabulary tokens of valid / test map to it when the train
/// split contains it (PTB does).
pub const UNK: &str = "<unk>";

/// Longest accepted line, in bytes without the line end (1 MiB). Longer lines are almost
/// certainly not tokenised text and would make one "sentence" of the whole file.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Most distinct tokens a vocabulary may have (1,000,000): the output layer is
/// `vocab × d_model`, so a larger vocabulary is a data mistake rather than a model.
pub const MAX_VOCAB: usize = 1_000_000;

/// Largest accepted data file (4 GiB), checked before reading it into memory.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// How text is cut into tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Level {
    /// Whitespace-separated words, one `<eos>` per line.
    #[default]
    Word,
    /// Characters (or the pre-spaced symbols of `ptb.char`), one `<eos>` per line.
    Char,
}

impl Level {
    /// The name used on the command line and in checkpoint metadata: `word` or `char`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Word => "word",
            Level::Char => "char",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = DeqError;

    /// Parses `word` or `char`; anything else is a [`DeqError::Config`] naming the value.
    fn from_str(s: &str) -> Result<Level> {
        match s {
            "word" => Ok(Level::Word),
            "char" => Ok(Level::Char),
            other => Err(DeqError::config(format!(
                "unknown level {other:?} (expected \"word\" or \"char\")"
            ))),
        }
    }
}

/// Size bounds applied while loading data. [`Limits::default`] holds the documented
/// constants; tests and fuzzers may tighten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted line in bytes (without the line end).
    pub max_line_bytes: usize,
    /// Most distinct tokens in the vocabulary (`<eos>` included).
    pub max_vocab: usize,
    /// Largest accepted file in bytes.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: MAX_LINE_BYTES,
            max_vocab: MAX_VOCAB,
            max_file_bytes: MAX_FILE_BYTES,
        }
    }
}
