//! The token ↔ id map, built from the train split.

use super::{Level, EOS, UNK};
use crate::error::{DeqError, Result};
use std::collections::HashMap;
use std::path::Path;

/// A vocabulary: token strings indexed by id, ids assigned in order of first appearance.
///
/// `<eos>` is always present (appended if the text had no line). `<unk>` is present only if
/// the train text contains it; [`Vocab::encode`] then maps unknown tokens to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, usize>,
    eos: usize,
    unk: Option<usize>,
    /// Character level: whitespace characters are tokens (plain text) rather than separators
    /// (pre-spaced `ptb.char` files). True exactly when some token is whitespace.
    keep_spaces: bool,
}

/// Token slices of one line (without its line end), appended to `out`.
fn line_tokens<'a>(line: &'a str, level: Level, keep_spaces: bool, out: &mut Vec<&'a str>) {
    out.clear();
    match level {
        Level::Word => out.extend(line.split_whitespace()),
        Level::Char => out.extend(
            line.char_indices()
                .filter(|(_, c)| keep_spaces || !c.is_whitespace())
                .map(|(i, c)| &line[i..i + c.len_utf8()]),
        ),
    }
}

/// The lines of `text` without their line ends. A whitespace-only tail after the last line
/// break is not a line: Mikolov's `ptb.char` files end with `"\n "`, and their published
/// token counts give one `<eos>` per line break.
fn lines_of(text: &str) -> std::str::Lines<'_> {
    let body = match text.rfind('\n') {
        Some(end) if text[end + 1..].trim().is_empty() => &text[..=end],
        _ => text,
    };
    body.lines()
}

/// True when every whitespace-separated piece of `text` is one character (`ptb.char` style).
fn is_pre_spaced(text: &str) -> bool {
    text.split_whitespace()
        .all(|piece| piece.chars().nth(1).is_none())
}

/// Accumulates tokens in order of first appearance.
#[derive(Default)]
struct Builder {
    tokens: Vec<String>,
    index: HashMap<String, usize>,
}

impl Builder {
    fn intern(&mut self, tok: &str) -> usize {
        if let Some(&id) = self.index.get(tok) {
            return id;
        }
        let id = self.tokens.len();
        self.tokens.push(tok.to_owned());
        self.index.insert(tok.to_owned(), id);
        id
    }

    /// Adds every line of `text`; on exceeding `max` distinct tokens returns the 1-based line.
    fn add_text(&mut self, text: &str, level: Level, max: usize) -> std::result::Result<(), usize> {
        let keep_spaces = level == Level::Char && !is_pre_spaced(text);
        let mut toks = Vec::new();
        for (i, line) in lines_of(text).enumerate() {
            line_tokens(line, level, keep_spaces, &mut toks);
            for tok in toks.iter().copied().chain(std::iter::once(EOS)) {
                self.intern(tok);
                if self.tokens.len() > max {
                    return Err(i + 1);
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Vocab {
        let eos = self.intern(EOS);
        let unk = self.index.get(UNK).copied();
        let keep_spaces = self
            .tokens
            .iter()
            .any(|t| t.chars().all(char::is_whitespace));
        Vocab {
            tokens: self.tokens,
            index: self.index,
            eos,
            unk,
            keep_spaces,
        }
    }
}

impl Vocab {
    /// Builds the vocabulary of `train_text`: each line's tokens then `<eos>`, ids in order of
    /// first appearance. No size limit; loaders use [`Vocab::build_checked`].
    pub fn build(train_text: &str, level: Level) -> Vocab {
        let mut b = Builder::default();
        // With no limit the only error (too many tokens) cannot happen.
        let _ = b.add_text(train_text, level, usize::MAX);
        b.finish()
    }

    /// [`Vocab::build`] that stops with a [`DeqError::Data`] (naming `path` and the line) as
    /// soon as more than `max_tokens` distinct tokens appear.
    pub fn build_checked(
        train_text: &str,
        level: Level,
        max_tokens: usize,
        path: &Path,
    ) -> Result<Vocab> {
        let mut b = Builder::default();
        b.add_text(train_text, level, max_tokens).map_err(|line| {
            DeqError::data(
                path,
                format!(
                    "the vocabulary exceeds {max_tokens} distinct tokens (at line {line}); \
                     is the level right (word vs char) and is this tokenised text?"
                ),
            )
        })?;
        let vocab = b.finish();
        if vocab.len() > max_tokens {
            return Err(DeqError::data(
                path,
                format!("the vocabulary exceeds {max_tokens} distinct tokens"),
            ));
        }
        Ok(vocab)
    }

    /// Restores a vocabulary from its tokens in id order (as stored in a checkpoint).
    ///
    /// Errors ([`DeqError::Vocab`]): no tokens, more than [`MAX_VOCAB`](super::MAX_VOCAB), an
    /// empty or duplicated token, a token with a line break or with whitespace next to other
    /// characters, or no `<eos>`.
    pub fn from_tokens(tokens: Vec<String>) -> Result<Vocab> {
        if tokens.len() > super::MAX_VOCAB {
            return Err(DeqError::vocab(format!(
                "{} tokens, over the limit of {}",
                tokens.len(),
                super::MAX_VOCAB
            )));
        }
        let mut b = Builder::default();
        for (id, tok) in tokens.iter().enumerate() {
            let bad = tok.is_empty()
                || tok.contains(['\n', '\r'])
                || (tok.chars().nth(1).is_some() && tok.contains(char::is_whitespace));
            if bad {
                return Err(DeqError::vocab(format!(
                    "token {id} ({tok:?}) is malformed"
                )));
            }
            if b.intern(tok) != id {
                return Err(DeqError::vocab(format!(
                    "token {tok:?} appears twice (ids {} and {id})",
                    b.index[tok.as_str()]
                )));
            }
        }
        if !b.index.contains_key(EOS) {
            return Err(DeqError::vocab(format!("no {EOS} token")));
        }
        Ok(b.finish())
    }

    /// Number of tokens (the model's output size).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false: a vocabulary holds at least `<eos>`.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of `tok`, if present.
    pub fn id(&self, tok: &str) -> Option<usize> {
        self.index.get(tok).copied()
    }

    /// The token with id `id`. Panics when `id >= len()` (a programmer error, like indexing);
    /// [`Vocab::get_token`] is the checked form.
    pub fn token(&self, id: usize) -> &str {
        &self.tokens[id]
    }

    /// The token with id `id`, or `None` when out of range.
    pub fn get_token(&self, id: usize) -> Option<&str> {
        self.tokens.get(id).map(String::as_str)
    }

    /// The id of `<eos>`.
    pub fn eos(&self) -> usize {
        self.eos
    }

    /// The id of `<unk>`, if the train text had it.
    pub fn unk(&self) -> Option<usize> {
        self.unk
    }

    /// All tokens in id order (what a checkpoint stores).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Encodes `text` line by line (tokens then `<eos>`), the way the vocabulary was built.
    ///
    /// A token outside the vocabulary becomes `<unk>` when there is one; otherwise the result
    /// is a [`DeqError::Data`] naming `path`, the line and the token.
    pub fn encode(&self, text: &str, level: Level, path: &Path) -> Result<Vec<usize>> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        let mut toks = Vec::new();
        for (i, line) in lines_of(text).enumerate() {
            line_tokens(line, level, self.keep_spaces, &mut toks);
            for &tok in &toks {
                match self.index.get(tok).copied().or(self.unk) {
                    Some(id) => ids.push(id),
                    None => {
                        return Err(DeqError::data(
                            path,
                            format!(
                                "line {}: token {tok:?} is not in the train vocabulary \
                                 (and the train split has no {UNK} to map it to)",
                                i + 1
                            ),
                        ))
                    }
                }
            }
            ids.push(self.eos);
        }
        Ok(ids)
    }

    /// Renders ids as text: `<eos>` becomes a line break; words are separated by spaces,
    /// characters are concatenated. Out-of-range ids show as `<?>`.
    pub fn decode(&self, ids: &[usize], level: Level) -> String {
        let mut out = String::new();
        let mut line_start = true;
        for &id in ids {
            if id == self.eos {
                out.push('\n');
                line_start = true;
                continue;
            }
            if level == Level::Word && !line_start {
                out.push(' ');
            }
            out.push_str(self.get_token(id).unwrap_or("<?>"));
            line_start = false;
        }
        out
    }

    /// A stable 64-bit FNV-1a hash of the tokens in id order (each followed by the byte
    /// `0xFF`, which UTF-8 never contains). Checkpoints store it so that a model is never
    /// paired with another vocabulary.
    pub fn hash(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        for tok in &self.tokens {
            for &b in tok.as_bytes().iter().chain(std::iter::once(&0xFF)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        }
        h
    }
}
