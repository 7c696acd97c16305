//! Batchify a token stream into `B` parallel streams and serve `[B, T]` segments.

use crate::error::{DeqError, Result};

/// A split cut into `streams` contiguous streams of `len` tokens each, stored `[B, len]`
/// row-major. Stream `b` is `ids[b·len .. (b+1)·len]` of the original split; the tail that
/// does not fill a whole row is dropped (as in the PyTorch / DEQ loaders).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batched {
    /// Number of streams `B` (the batch size).
    pub streams: usize,
    /// Tokens per stream.
    pub len: usize,
    data: Vec<usize>,
}

/// Cuts `ids` into `batch` streams (see [`Batched`]).
///
/// Errors ([`DeqError::Config`]): `batch == 0`, or fewer than `2 · batch` tokens (every stream
/// needs an input and a target token).
pub fn batchify(ids: &[usize], batch: usize) -> Result<Batched> {
    if batch == 0 {
        return Err(DeqError::config("batch size must be at least 1 (got 0)"));
    }
    let len = ids.len() / batch;
    if len < 2 {
        return Err(DeqError::config(format!(
            "{} tokens are too few for batch size {batch} (each stream needs at least 2 tokens); \
             use a smaller batch size",
            ids.len()
        )));
    }
    Ok(Batched {
        streams: batch,
        len,
        data: ids[..batch * len].to_vec(),
    })
}

impl Batched {
    /// All tokens, `[streams, len]` row-major.
    pub fn data(&self) -> &[usize] {
        &self.data
    }

    /// Stream `b` (panics when `b >= streams`, like indexing).
    pub fn stream(&self, b: usize) -> &[usize] {
        &self.data[b * self.len..(b + 1) * self.len]
    }

    /// The window starting at position `start` of every stream: `(inputs, targets, t)` with
    /// both vectors `[streams, t]` row-major, `targets` shifted one token ahead of `inputs`,
    /// and `t = min(seq_len, len - 1 - start)`. `None` when `start + 1 >= len` or
    /// `seq_len == 0`.
    pub fn segment(&self, start: usize, seq_len: usize) -> Option<(Vec<usize>, Vec<usize>, usize)> {
        // The fields are public: refuse a window the data does not hold rather than panic.
        let held = self.streams.checked_mul(self.len)? <= self.data.len();
        if seq_len == 0 || !held || start.checked_add(1)? >= self.len {
            return None;
        }
        let t = seq_len.min(self.len - 1 - start);
        let mut inputs = Vec::with_capacity(self.streams * t);
        let mut targets = Vec::with_capacity(self.streams * t);
        for b in 0..self.streams {
            let row = self.stream(b);
            inputs.extend_from_slice(&row[start..start + t]);
            targets.extend_from_slice(&row[start + 1..start + 1 + t]);
        }
        Some((inputs, targets, t))
    }

    /// How many segments of length `seq_len` cover the split: starts `0, seq_len, 2·seq_len, …`
    /// while `start + 1 < len` (the last one may be shorter). Zero when `seq_len == 0`.
    pub fn num_segments(&self, seq_len: usize) -> usize {
        if seq_len == 0 {
            return 0;
        }
        self.len.saturating_sub(1).div_ceil(seq_len)
    }
}
