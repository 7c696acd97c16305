//! Scoring a whole split with a run's evaluation protocol ([`EvalConfig`]): what `deq eval`,
//! the periodic validation of `deq train` and its final evaluation print.
//!
//! The split's `N` tokens are cut into `B` streams of `L = ⌊N / B⌋` tokens (the last `N mod B`
//! tokens are dropped); each stream is read in segments of `T` tokens, the DEQ-Transformer
//! attending to `M` positions of memory carried from the previous segment (none for the first
//! one). Every token of a stream except its first is a target, so `B·(L − 1)` tokens are scored
//! and the loss is their mean cross-entropy (nats); the perplexity is its `exp`.

use crate::config::{EvalConfig, TrainConfig};
use crate::data::{batchify, Batched};
use crate::error::Result;
use crate::lm::{CellConfig, LanguageModel, Memory};
use deq_autograd::{no_grad, Rng};
use std::borrow::Cow;

/// What scoring a split measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// Mean cross-entropy (nats) over the scored tokens.
    pub loss: f64,
    /// Tokens scored: `streams · (stream_len − 1)`.
    pub scored: usize,
    /// Tokens in the split.
    pub tokens: usize,
    /// Streams `B`.
    pub streams: usize,
    /// Tokens per stream `L`.
    pub stream_len: usize,
    /// Tokens per segment `T`.
    pub seq_len: usize,
    /// Positions of attention memory (`None`: TrellisNet, which carries its last state).
    pub mem_len: Option<usize>,
    /// The evaluation's forward solves: how far from equilibrium the scored states were.
    pub solve: EvalSolve,
}

/// The forward solves of an evaluation, over every segment and sample. The perplexity is only
/// that of the equilibrium model when these residuals are small: an unconverged solve is a
/// weight-tied net of the depth it stopped at, and Anderson's and Broyden's per-sample mixing
/// then lets later tokens of a segment move earlier predictions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalSolve {
    /// Mean over samples and segments of the returned iterate's relative residual
    /// `‖f(z) − z‖ / ‖f(z)‖`.
    pub mean_rel: f64,
    /// The largest of those residuals.
    pub max_rel: f64,
    /// Mean iterations per segment.
    pub mean_iterations: f64,
    /// Segments solved.
    pub segments: usize,
}

impl EvalSolve {
    fn add(&mut self, stats: &deq_solvers::SolveStats) {
        let n = stats.lowest_rel.len().max(1) as f64;
        let mean = stats.lowest_rel.iter().sum::<f64>() / n;
        let k = self.segments as f64;
        self.mean_rel = (self.mean_rel * k + mean) / (k + 1.0);
        self.mean_iterations = (self.mean_iterations * k + stats.iterations as f64) / (k + 1.0);
        self.max_rel = self.max_rel.max(stats.max_rel());
        self.segments += 1;
    }

    /// e.g. "forward residual 3.1e-3 mean, 2.0e-2 max, 12.0 iterations".
    pub fn describe(&self) -> String {
        format!(
            "forward residual {:.1e} mean, {:.1e} max, {:.1} iterations",
            self.mean_rel, self.max_rel, self.mean_iterations
        )
    }
}

impl Score {
    /// `exp(loss)`.
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }

    /// Tokens of the split that are not scored: the first of each stream (context only) and
    /// the tail that does not fill a stream.
    pub fn unscored(&self) -> usize {
        self.tokens - self.scored
    }

    /// One line saying what was scored, e.g. "73744 of 73760 tokens scored (16 streams of 4610;
    /// each stream's first token and the 0-token tail unscored), segments of 32, memory 16".
    pub fn describe(&self) -> String {
        let memory = match self.mem_len {
            Some(m) => format!("memory {m}"),
            None => "the last state as memory".to_string(),
        };
        format!(
            "{} of {} tokens scored ({} streams of {}; each stream's first token and the \
             {}-token tail unscored), segments of {}, {memory}",
            self.scored,
            self.tokens,
            self.streams,
            self.stream_len,
            self.tokens - self.streams * self.stream_len,
            self.seq_len
        )
    }
}

/// A split cut into the evaluation's streams once, scored as often as needed.
#[derive(Clone, Debug)]
pub struct EvalSplit {
    data: Batched,
    tokens: usize,
}

impl EvalSplit {
    /// Cuts `ids` into `eval.batch` streams; errors when a stream would not hold a target.
    pub fn new(ids: &[usize], eval: &EvalConfig) -> Result<EvalSplit> {
        Ok(EvalSplit {
            data: batchify(ids, eval.batch)?,
            tokens: ids.len(),
        })
    }

    /// Scores `model` with `cfg.eval` and `cfg.eval_deq` (no dropout, no gradients).
    pub fn score(&self, model: &LanguageModel<f32>, cfg: &TrainConfig) -> Score {
        let model = with_eval_memory(model, &cfg.eval);
        let seq_len = cfg.eval.seq_len;
        let (mut total, mut scored) = (0.0f64, 0usize);
        let mut solve = EvalSolve::default();
        no_grad(|| {
            let p = model.store.constants();
            let mut memory = Memory::default();
            let mut pos = 0;
            while let Some((inputs, targets, t)) = self.data.segment(pos, seq_len) {
                let out = model.forward(
                    &p,
                    &inputs,
                    &targets,
                    self.data.streams,
                    &memory,
                    &cfg.eval_deq,
                    None,
                );
                if let Some(f) = &out.stats.forward {
                    solve.add(f);
                }
                total += out.loss.item() as f64 * inputs.len() as f64;
                scored += inputs.len();
                memory = out.memory;
                pos += t;
            }
        });
        Score {
            loss: total / scored as f64,
            scored,
            tokens: self.tokens,
            streams: self.data.streams,
            stream_len: self.data.len,
            seq_len,
            mem_len: memory_len(&model, &cfg.eval),
            solve,
        }
    }
}

/// The attention memory an evaluation uses.
fn memory_len(model: &LanguageModel<f32>, eval: &EvalConfig) -> Option<usize> {
    match &model.cfg.cell {
        CellConfig::Transformer(c) => Some(eval.mem_len.unwrap_or(c.mem_len)),
        CellConfig::Trellisnet(_) => None,
    }
}

/// `model`, or a copy of it whose DEQ-Transformer keeps `eval.mem_len` positions of memory
/// (the memory length changes no parameter, so the copy shares the values).
fn with_eval_memory<'a>(
    model: &'a LanguageModel<f32>,
    eval: &EvalConfig,
) -> Cow<'a, LanguageModel<f32>> {
    let mut cfg = model.cfg.clone();
    match (&mut cfg.cell, eval.mem_len) {
        (CellConfig::Transformer(c), Some(m)) if c.mem_len != m => c.mem_len = m,
        _ => return Cow::Borrowed(model),
    }
    let mut copy = LanguageModel::new(&cfg, &mut Rng::new(0));
    copy.store = model.store.clone();
    Cow::Owned(copy)
}
