//! Reading and validating text: size, encoding, NUL bytes, line lengths.
//!
//! Validation happens before any tokenisation so that a binary file or a wrong path gives a
//! message about the file, not a confusing vocabulary of garbage.

use super::Limits;
use crate::error::{DeqError, Result};
use std::path::Path;

/// 1-based line number of byte `offset` in `bytes`.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Rejects a NUL byte (the mark of a binary file).
fn check_no_nul(bytes: &[u8], path: &Path) -> Result<()> {
    match bytes.iter().position(|&b| b == 0) {
        Some(at) => Err(DeqError::data(
            path,
            format!(
                "contains a NUL byte at offset {at} (line {}); this looks like a binary file, not text",
                line_of(bytes, at)
            ),
        )),
        None => Ok(()),
    }
}

/// Checks text already known to be UTF-8: not empty, not only whitespace, no NUL byte, no
/// line longer than `limits.max_line_bytes`. `path` labels the errors.
pub(crate) fn check_text(text: &str, path: &Path, limits: &Limits) -> Result<()> {
    if text.is_empty() {
        return Err(DeqError::data(path, "is empty"));
    }
    check_no_nul(text.as_bytes(), path)?;
    for (i, line) in text.split('\n').enumerate() {
        if line.len() > limits.max_line_bytes {
            return Err(DeqError::data(
                path,
                format!(
                    "line {} is {} bytes long, over the limit of {} bytes; is this tokenised text?",
                    i + 1,
                    line.len(),
                    limits.max_line_bytes
                ),
            ));
        }
    }
    if text.trim().is_empty() {
        return Err(DeqError::data(path, "contains only whitespace (no tokens)"));
    }
    Ok(())
}

/// Validates raw file bytes as a text corpus and returns them as `&str`, without a leading
/// UTF-8 byte-order mark.
///
/// Errors ([`DeqError::Data`] labelled with `path`): empty input, a NUL byte (binary file),
/// invalid UTF-8 (with the offset and line of the first bad byte), a line over
/// `limits.max_line_bytes`, whitespace only. This is the entry point for fuzzing the loader.
pub fn decode_text<'a>(bytes: &'a [u8], path: &Path, limits: &Limits) -> Result<&'a str> {
    if bytes.is_empty() {
        return Err(DeqError::data(path, "is empty"));
    }
    check_no_nul(bytes, path)?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        DeqError::data(
            path,
            format!(
                "is not valid UTF-8 (first bad byte at offset {at}, line {}); is it a binary or compressed file?",
                line_of(bytes, at)
            ),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_text(text, path, limits)?;
    Ok(text)
}

/// Reads and validates a text file (see [`decode_text`]); also rejects a path that is not a
/// regular file and a file over `limits.max_file_bytes`, before reading it.
pub fn read_text_file(path: &Path, limits: &Limits) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| DeqError::io(path, e))?;
    if !meta.is_file() {
        return Err(DeqError::data(path, "is not a regular file"));
    }
    if meta.len() > limits.max_file_bytes {
        return Err(DeqError::data(
            path,
            format!(
                "is {} bytes, over the limit of {} bytes",
                meta.len(),
                limits.max_file_bytes
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| DeqError::io(path, e))?;
    let text = decode_text(&bytes, path, limits)?;
    Ok(text.to_owned())
}
