//! A train / valid / test corpus encoded with the train vocabulary.

use super::text::{check_text, read_text_file};
use super::{Level, Limits, Vocab};
use crate::error::{DeqError, Result};
use std::path::{Path, PathBuf};

/// The three splits of a language-modelling data set as token ids, plus the vocabulary.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Vocabulary built from the train split.
    pub vocab: Vocab,
    /// Train split ids (each line's tokens then `<eos>`).
    pub train: Vec<usize>,
    /// Validation split ids.
    pub valid: Vec<usize>,
    /// Test split ids.
    pub test: Vec<usize>,
    /// How the text was tokenised.
    pub level: Level,
}

/// The three split names, in the order they are loaded.
const SPLITS: [&str; 3] = ["train", "valid", "test"];

/// Which file of `names` holds `split`: `split.txt` / `split.tokens` first, else the only
/// `*.split.txt` / `*.split.tokens`; with several, the level decides (`.char.` in the name
/// for [`Level::Char`], its absence for [`Level::Word`]).
fn pick_split(dir: &Path, names: &[String], split: &str, level: Level) -> Result<PathBuf> {
    let exact = [format!("{split}.txt"), format!("{split}.tokens")];
    if let Some(name) = exact.iter().find(|n| names.contains(n)) {
        return Ok(dir.join(name));
    }
    let suffixes = [format!(".{split}.txt"), format!(".{split}.tokens")];
    let mut found: Vec<&String> = names
        .iter()
        .filter(|n| suffixes.iter().any(|s| n.len() > s.len() && n.ends_with(s)))
        .collect();
    if found.len() > 1 {
        let by_level: Vec<&String> = found
            .iter()
            .copied()
            .filter(|n| n.contains(".char.") == (level == Level::Char))
            .collect();
        if !by_level.is_empty() {
            found = by_level;
        }
    }
    match found.as_slice() {
        [one] => Ok(dir.join(one)),
        [] => Err(DeqError::data(
            dir,
            format!(
                "no {split} split found (looked for {split}.txt, {split}.tokens, \
                 *.{split}.txt and *.{split}.tokens)"
            ),
        )),
        many => Err(DeqError::data(
            dir,
            format!(
                "several candidate {split} files ({}); keep one or name it {split}.txt",
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Sorted names of the regular files (or links to them) in `dir`.
fn file_names(dir: &Path) -> Result<Vec<String>> {
    let meta = std::fs::metadata(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DeqError::data(
            dir,
            "data directory does not exist (it should hold train / valid / test text files, \
             e.g. train.txt or ptb.train.txt)",
        ),
        _ => DeqError::io(dir, e),
    })?;
    if !meta.is_dir() {
        return Err(DeqError::data(
            dir,
            "is not a directory (--data expects a directory with train / valid / test files)",
        ));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DeqError::io(dir, e))? {
        let entry = entry.map_err(|e| DeqError::io(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            if entry.path().is_file() {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

impl Corpus {
    /// Loads `dir` with the default [`Limits`]; see [`Corpus::load_dir_with`].
    pub fn load_dir(dir: &Path, level: Level) -> Result<Corpus> {
        Self::load_dir_with(dir, level, &Limits::default())
    }

    /// Finds, validates and encodes the train / valid / test files of `dir`.
    ///
    /// A split `s` is the file `s.txt` or `s.tokens`, else the one file named `*.s.txt` or
    /// `*.s.tokens` (`ptb.train.txt`, `ptb.char.train.txt`, `wiki.train.tokens`); when both a
    /// word and a `.char.` file match, `level` picks. Errors name the directory or file: a
    /// missing directory or split, an ambiguous split, an empty / binary / non-UTF-8 file, a
    /// line or vocabulary over `limits`, a valid / test token unknown to a vocabulary without
    /// `<unk>`.
    pub fn load_dir_with(dir: &Path, level: Level, limits: &Limits) -> Result<Corpus> {
        let names = file_names(dir)?;
        let mut paths = Vec::with_capacity(3);
        for split in SPLITS {
            paths.push(pick_split(dir, &names, split, level)?);
        }
        let mut texts = Vec::with_capacity(3);
        for path in &paths {
            texts.push(read_text_file(path, limits)?);
        }
        Self::encode_all(
            [&texts[0], &texts[1], &texts[2]],
            [&paths[0], &paths[1], &paths[2]],
            level,
            limits,
        )
    }

    /// Builds a corpus from in-memory texts with the default [`Limits`] (errors name the
    /// splits as `<train text>` etc.).
    pub fn from_texts(train: &str, valid: &str, test: &str, level: Level) -> Result<Corpus> {
        Self::from_texts_with(train, valid, test, level, &Limits::default())
    }

    /// [`Corpus::from_texts`] with explicit limits.
    pub fn from_texts_with(
        train: &str,
        valid: &str,
        test: &str,
        level: Level,
        limits: &Limits,
    ) -> Result<Corpus> {
        let labels = SPLITS.map(|s| PathBuf::from(format!("<{s} text>")));
        for (text, label) in [train, valid, test].iter().zip(&labels) {
            check_text(text, label, limits)?;
        }
        Self::encode_all(
            [train, valid, test],
            [&labels[0], &labels[1], &labels[2]],
            level,
            limits,
        )
    }

    /// Builds the vocabulary from the (already validated) train text and encodes all splits.
    fn encode_all(
        texts: [&str; 3],
        paths: [&Path; 3],
        level: Level,
        limits: &Limits,
    ) -> Result<Corpus> {
        let vocab = Vocab::build_checked(texts[0], level, limits.max_vocab, paths[0])?;
        let train = vocab.encode(texts[0], level, paths[0])?;
        let valid = vocab.encode(texts[1], level, paths[1])?;
        let test = vocab.encode(texts[2], level, paths[2])?;
        Ok(Corpus {
            vocab,
            train,
            valid,
            test,
            level,
        })
    }
}
