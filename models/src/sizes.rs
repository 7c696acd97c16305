//! Sizes checked before anything is allocated: the segments against the data, and a lower
//! bound of the memory a training step or an evaluation needs, for the caller to compare with
//! the machine's (a `--seq-len` of 10⁸ would otherwise ask for hundreds of gigabytes of
//! attention scores and abort the process).

use crate::config::{EvalConfig, TrainConfig};
use crate::lm::CellConfig;

/// Ok when `split` (of `tokens` tokens) cut into `batch` streams holds a segment of `seq_len`
/// tokens plus its targets; otherwise a message naming the setting (`batch_field`,
/// `seq_field`, e.g. "`seq_len` (--seq-len)").
pub fn check_segment(
    split: &str,
    tokens: usize,
    batch: usize,
    seq_len: usize,
    batch_field: &str,
    seq_field: &str,
) -> Result<(), String> {
    if batch == 0 || tokens / batch < 2 {
        return Err(format!(
            "{batch_field} {batch} is too large for the {split} split: its {tokens} tokens cut \
             into {batch} streams leave fewer than 2 tokens per stream"
        ));
    }
    let stream = tokens / batch;
    if seq_len > stream - 1 {
        return Err(format!(
            "{seq_field} {seq_len} is longer than a {split} stream: the {split} split's {tokens} \
             tokens cut into {batch} streams give {stream} tokens each, so a segment holds at \
             most {}",
            stream - 1
        ));
    }
    Ok(())
}

/// [`check_segment`] for the training split with `cfg.batch`/`cfg.seq_len` and the
/// validation and test splits with `cfg.eval`.
pub fn check_data(
    cfg: &TrainConfig,
    train: usize,
    valid: usize,
    test: usize,
) -> Result<(), String> {
    check_segment(
        "training",
        train,
        cfg.batch,
        cfg.seq_len,
        "`batch` (--batch)",
        "`seq_len` (--seq-len)",
    )?;
    check_eval_data(&cfg.eval, valid, test)
}

/// [`check_segment`] for the validation and test splits with the evaluation protocol.
pub fn check_eval_data(eval: &EvalConfig, valid: usize, test: usize) -> Result<(), String> {
    for (split, tokens) in [("validation", valid), ("test", test)] {
        check_segment(
            split,
            tokens,
            eval.batch,
            eval.seq_len,
            "the evaluation batch `eval.batch`",
            "the evaluation segment length `eval.seq_len`",
        )?;
    }
    Ok(())
}

/// A lower bound of the bytes one computation needs, with the term that dominates it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryBound {
    /// Bytes (f64: the product of sizes can exceed `u64`).
    pub bytes: f64,
    /// The largest term, e.g. "attention scores 16×2×58099×58115 f32".
    pub largest: String,
}

impl MemoryBound {
    fn from_terms(terms: Vec<(f64, String)>) -> MemoryBound {
        let bytes = terms.iter().map(|(b, _)| b).sum();
        let largest = terms
            .into_iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, what)| what)
            .unwrap_or_default();
        MemoryBound { bytes, largest }
    }
}

/// The terms of a bound: the embedding (a lower bound of the parameters) in `param_copies`
/// copies, and the logits and attention scores (or gates) of one `[batch, seq_len]` segment in
/// `act_copies` copies.
fn terms(
    cfg: &TrainConfig,
    (batch, seq_len, mem_len): (usize, usize, usize),
    param_copies: usize,
    act_copies: usize,
) -> Vec<(f64, String)> {
    let f = |x: usize| x as f64;
    let (pc, ac) = (f(param_copies), f(act_copies));
    let m = &cfg.model;
    let mut out = vec![
        (
            4.0 * pc * f(m.vocab) * f(m.d_embed),
            format!(
                "embedding {}×{} f32, {param_copies} copies",
                m.vocab, m.d_embed
            ),
        ),
        (
            4.0 * ac * f(batch) * f(seq_len) * f(m.vocab),
            format!(
                "logits {batch}×{seq_len}×{} f32, {act_copies} copies",
                m.vocab
            ),
        ),
    ];
    match &m.cell {
        CellConfig::Transformer(c) => {
            let keys = seq_len + mem_len;
            out.push((
                4.0 * ac * f(batch) * f(c.n_head) * f(seq_len) * f(keys),
                format!(
                    "attention scores {batch}×{}×{seq_len}×{keys} f32, {act_copies} copies",
                    c.n_head
                ),
            ));
        }
        CellConfig::Trellisnet(c) => out.push((
            4.0 * ac * f(batch) * f(seq_len) * f(4 * c.hidden),
            format!(
                "gates {batch}×{seq_len}×{} f32, {act_copies} copies",
                4 * c.hidden
            ),
        )),
    }
    out
}

/// A lower bound of one training step's memory: parameters, gradients and both Adam moments
/// (four copies of at least the embedding), logits and their gradient, attention scores and
/// probabilities (or TrellisNet's gates and their gradient).
pub fn train_step_bound(cfg: &TrainConfig) -> MemoryBound {
    let mem = match &cfg.model.cell {
        CellConfig::Transformer(c) => c.mem_len,
        CellConfig::Trellisnet(_) => 0,
    };
    MemoryBound::from_terms(terms(cfg, (cfg.batch, cfg.seq_len, mem), 4, 2))
}

/// A lower bound of one evaluation segment's memory: the parameters, the logits and the
/// attention scores (or gates), once each.
pub fn eval_bound(cfg: &TrainConfig) -> MemoryBound {
    let mem = match &cfg.model.cell {
        CellConfig::Transformer(c) => cfg.eval.mem_len.unwrap_or(c.mem_len),
        CellConfig::Trellisnet(_) => 0,
    };
    let e = &cfg.eval;
    MemoryBound::from_terms(terms(cfg, (e.batch, e.seq_len, mem), 1, 1))
}
