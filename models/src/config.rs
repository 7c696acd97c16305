//! The configuration of a training run: [`TrainConfig`] (stored in every checkpoint and
//! accepted as JSON by `deq train --config`), its evaluation protocol [`EvalConfig`], the named
//! presets, and the rules that derive the schedule from the step count and the learning rate
//! (each written once, in [`TrainConfig::set_steps`] and [`TrainConfig::set_lr`]).

use crate::cells::{TransformerConfig, TrellisConfig};
use crate::lm::{CellConfig, ModelConfig};
use crate::optim::{AdamConfig, LrSchedule};
use deq_solvers::implicit::{BackwardMode, DeqConfig};
use deq_solvers::{SolverConfig, SolverKind, StopMode};
use serde::{Deserialize, Serialize};

/// Everything that defines a training run (stored in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawTrainConfig")]
pub struct TrainConfig {
    /// Architecture (its `vocab` is set from the data).
    pub model: ModelConfig,
    /// Streams per training batch.
    pub batch: usize,
    /// Tokens per training segment.
    pub seq_len: usize,
    /// Optimisation steps.
    pub steps: usize,
    /// Learning-rate schedule (its `total` must equal `steps`).
    pub schedule: LrSchedule,
    /// Adam settings.
    pub adam: AdamConfig,
    /// Global gradient-norm clip (0: none).
    pub clip: f64,
    /// Steps of unrolled pre-training before switching to the DEQ.
    pub pretrain_steps: usize,
    /// Weight-tied applications during pre-training.
    pub pretrain_depth: usize,
    /// The implicit layer while training.
    pub train_deq: DeqConfig,
    /// The implicit layer while evaluating (typically more iterations).
    pub eval_deq: DeqConfig,
    /// Evaluate on the whole validation split every this many steps (0: only at the end).
    pub eval_every: usize,
    /// How the validation and test splits are scored.
    pub eval: EvalConfig,
    /// Seed of initialisation, dropout and data order.
    pub seed: u64,
    /// Jacobian regularisation (off by default).
    pub jac: JacobianReg,
}

/// Jacobian regularisation of training (Bai, Koltun & Kolter 2021, "Stabilizing equilibrium
/// models by Jacobian regularization"): with probability `freq` a step adds
/// `weight · ‖J_f(z*)‖_F² / N` to its loss, estimated with `n_vecs` Gaussian probes
/// ([`deq_solvers::implicit::jacobian_penalty`], whose error bounds its docs state). It keeps
/// the equilibrium's Jacobian small, so the solves converge in fewer iterations. The
/// reference's DEQ-Transformer runs use weight 1.9-2.0 at frequency 0.35-0.4 with one probe
/// (torchdeq's `deq-seq`: 0.1 / 0.4). Off when `weight` is 0 (the presets' default); a
/// configuration without the field is off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JacobianReg {
    /// Weight of the penalty in the loss (0: off).
    pub weight: f64,
    /// Probability that a step adds the penalty.
    pub freq: f64,
    /// Probes per estimate.
    pub n_vecs: usize,
}

impl Default for JacobianReg {
    fn default() -> Self {
        JacobianReg {
            weight: 0.0,
            freq: 0.35,
            n_vecs: 1,
        }
    }
}

impl JacobianReg {
    /// Whether any step adds the penalty.
    pub fn enabled(&self) -> bool {
        self.weight > 0.0 && self.freq > 0.0
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(format!(
                "`jac.weight` must be ≥ 0 (0: off), got {}",
                self.weight
            ));
        }
        if !(0.0..=1.0).contains(&self.freq) {
            return Err(format!("`jac.freq` must lie in [0, 1], got {}", self.freq));
        }
        if self.n_vecs == 0 {
            return Err("`jac.n_vecs` must be > 0".into());
        }
        Ok(())
    }
}

/// The evaluation protocol: a split is cut into `batch` contiguous streams (the last
/// `len mod batch` tokens are dropped), each stream is read in segments of `seq_len` tokens
/// carrying a memory of the previous `mem_len` positions, and every token but the first of each
/// stream is scored. The perplexity is `exp` of the mean cross-entropy over the scored tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Streams (the reference evaluates 16).
    pub batch: usize,
    /// Tokens per segment (the reference: 150).
    pub seq_len: usize,
    /// DEQ-Transformer only: positions of attention memory while evaluating (the reference:
    /// 150); `null`: the model's training `mem_len`. TrellisNet always carries its last state.
    pub mem_len: Option<usize>,
}

/// [`TrainConfig`] as read from JSON. Configurations written before the evaluation protocol
/// existed have `eval_segments` (a cap on periodic evaluations, now always the whole split) and
/// no `eval`; they still load, with the evaluation of those days: the training batch, segment
/// length and memory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrainConfig {
    model: ModelConfig,
    batch: usize,
    seq_len: usize,
    steps: usize,
    schedule: LrSchedule,
    adam: AdamConfig,
    clip: f64,
    pretrain_steps: usize,
    pretrain_depth: usize,
    train_deq: DeqConfig,
    eval_deq: DeqConfig,
    eval_every: usize,
    #[serde(default)]
    eval: Option<EvalConfig>,
    #[serde(default, rename = "eval_segments")]
    _legacy_eval_segments: Option<usize>,
    seed: u64,
    #[serde(default)]
    jac: JacobianReg,
}

impl From<RawTrainConfig> for TrainConfig {
    fn from(r: RawTrainConfig) -> Self {
        let eval = r
            .eval
            .unwrap_or_else(|| EvalConfig::like_training(&r.model, r.batch, r.seq_len));
        TrainConfig {
            model: r.model,
            batch: r.batch,
            seq_len: r.seq_len,
            steps: r.steps,
            schedule: r.schedule,
            adam: r.adam,
            clip: r.clip,
            pretrain_steps: r.pretrain_steps,
            pretrain_depth: r.pretrain_depth,
            train_deq: r.train_deq,
            eval_deq: r.eval_deq,
            eval_every: r.eval_every,
            eval,
            seed: r.seed,
            jac: r.jac,
        }
    }
}

impl EvalConfig {
    /// The training run's own batch, segment length and memory.
    pub fn like_training(model: &ModelConfig, batch: usize, seq_len: usize) -> EvalConfig {
        let mem_len = match &model.cell {
            CellConfig::Transformer(c) => Some(c.mem_len),
            CellConfig::Trellisnet(_) => None,
        };
        EvalConfig {
            batch,
            seq_len,
            mem_len,
        }
    }

    /// Checks the sizes against the model; the message names the field.
    pub fn validate(&self, model: &ModelConfig) -> Result<(), String> {
        if self.batch == 0 {
            return Err("`eval.batch` must be > 0".into());
        }
        if self.seq_len == 0 {
            return Err("`eval.seq_len` must be > 0".into());
        }
        if self.mem_len.is_some() && matches!(model.cell, CellConfig::Trellisnet(_)) {
            return Err(
                "`eval.mem_len` applies to the DEQ-Transformer only (TrellisNet carries its last \
                 state); set it to null"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The names accepted by [`TrainConfig::preset`].
pub const PRESETS: [&str; 5] = ["tiny", "ptb-small", "ptb-1h", "trellis-tiny", "ptb-trellis"];

/// Presets that are a wall-time budget (minutes): `deq train --preset NAME` runs with
/// `--minutes` set to this unless `--steps` or `--minutes` is given; their `steps` is
/// provisional, replaced by the budget's plan.
pub const TIMED_PRESETS: [(&str, f64); 1] = [("ptb-1h", 60.0)];

/// Warm-up lasts `steps / WARMUP_DIVISOR` steps (at least one).
pub const WARMUP_DIVISOR: usize = 20;
/// The cosine decays to `lr / MIN_LR_DIVISOR`.
pub const MIN_LR_DIVISOR: f64 = 20.0;
/// A run evaluates every `steps / EVALS_PER_RUN` steps.
pub const EVALS_PER_RUN: usize = 4;
/// Pre-training lasts at most `steps / PRETRAIN_DIVISOR` steps.
pub const PRETRAIN_DIVISOR: usize = 5;

/// A preset by name: the fields that differ between presets; everything else follows from
/// the rules of [`TrainConfig::set_steps`] and [`TrainConfig::set_lr`].
struct Recipe {
    model: ModelConfig,
    batch: usize,
    seq_len: usize,
    steps: usize,
    lr: f64,
    pretrain_steps: usize,
    /// Forward iterations while training.
    train_iters: usize,
    /// Backward iterations while training (`None`: two more than the forward).
    train_back_iters: Option<usize>,
    /// Forward iterations while evaluating (the backward gets two more).
    eval_iters: usize,
    /// Weight of the Jacobian penalty (0: off), at the default frequency 0.35.
    jac_weight: f64,
    /// How training steps differentiate through the equilibrium.
    train_mode: BackwardMode,
}

impl Recipe {
    fn build(self) -> TrainConfig {
        let eval = EvalConfig::like_training(&self.model, self.batch, self.seq_len);
        let mut cfg = TrainConfig {
            model: self.model,
            batch: self.batch,
            seq_len: self.seq_len,
            steps: self.steps,
            schedule: LrSchedule {
                lr: self.lr,
                min_lr: self.lr,
                warmup: 1,
                total: self.steps,
            },
            adam: AdamConfig::default(),
            clip: 0.25,
            pretrain_steps: self.pretrain_steps,
            pretrain_depth: 2,
            train_deq: deq_cfg(
                self.train_iters,
                self.train_back_iters.unwrap_or(self.train_iters + 2),
            ),
            eval_deq: deq_cfg(self.eval_iters, self.eval_iters + 2),
            eval_every: 0,
            eval,
            seed: 1,
            jac: JacobianReg {
                weight: self.jac_weight,
                ..JacobianReg::default()
            },
        };
        cfg.train_deq.mode = self.train_mode;
        cfg.set_lr(self.lr);
        cfg.set_steps(self.steps);
        cfg
    }
}

/// A DEQ-Transformer of width `d`.
struct Transformer {
    d: usize,
    heads: usize,
    inner: usize,
    mem: usize,
    dropout: f64,
    out_dropout: f64,
}

impl Transformer {
    fn model(self) -> ModelConfig {
        ModelConfig {
            vocab: 0,
            d_embed: self.d,
            emb_dropout: self.dropout,
            emb_scale: true,
            out_dropout: self.out_dropout,
            cell: CellConfig::Transformer(TransformerConfig {
                d_model: self.d,
                n_head: self.heads,
                d_inner: self.inner,
                mem_len: self.mem,
                dropout: self.dropout,
                pos_dropout: 0.0,
                att_dropout: 0.0,
                weight_norm: true,
            }),
        }
    }
}

/// A DEQ-TrellisNet with embedding width `d`.
struct Trellis {
    d: usize,
    hidden: usize,
    dropout: f64,
}

impl Trellis {
    fn model(self) -> ModelConfig {
        ModelConfig {
            vocab: 0,
            d_embed: self.d,
            emb_dropout: self.dropout,
            emb_scale: false,
            out_dropout: self.dropout,
            cell: CellConfig::Trellisnet(TrellisConfig {
                hidden: self.hidden,
                dropout: self.dropout,
                weight_drop: 0.0,
                weight_norm: true,
            }),
        }
    }
}

fn solver(kind: SolverKind, max_iter: usize, tol: f64) -> SolverConfig {
    SolverConfig::new(kind, max_iter, tol, StopMode::Rel).expect("valid preset solver")
}

/// Anderson forward with `forward_iters`, Broyden backward with `backward_iters` (and as many
/// low-rank pairs), relative 1e-3.
fn deq_cfg(forward_iters: usize, backward_iters: usize) -> DeqConfig {
    DeqConfig::new(
        solver(
            SolverKind::Anderson {
                m: 5,
                lam: 1e-4,
                beta: 1.0,
            },
            forward_iters,
            1e-3,
        ),
        solver(
            SolverKind::Broyden {
                memory: backward_iters,
            },
            backward_iters,
            1e-3,
        ),
        BackwardMode::Implicit,
    )
    .expect("valid preset")
}

impl TrainConfig {
    /// A named preset: `tiny` (the default: a small DEQ-Transformer that trains on PTB in a few
    /// minutes on 2 cores), `ptb-small` (the real PTB run), `ptb-1h` (the one-hour PTB run:
    /// see [`TIMED_PRESETS`]), `trellis-tiny`, `ptb-trellis`.
    pub fn preset(name: &str) -> Result<TrainConfig, String> {
        let recipe = match name {
            "tiny" => Recipe {
                model: Transformer {
                    d: 64,
                    heads: 2,
                    inner: 128,
                    mem: 16,
                    dropout: 0.0,
                    out_dropout: 0.0,
                }
                .model(),
                batch: 16,
                seq_len: 32,
                steps: 4000,
                lr: 3e-3,
                pretrain_steps: 200,
                train_iters: 8,
                train_back_iters: None,
                eval_iters: 12,
                jac_weight: 0.0,
                train_mode: BackwardMode::Implicit,
            },
            "ptb-small" => Recipe {
                model: Transformer {
                    d: 256,
                    heads: 4,
                    inner: 1024,
                    mem: 64,
                    dropout: 0.1,
                    out_dropout: 0.1,
                }
                .model(),
                batch: 16,
                seq_len: 64,
                steps: 20000,
                lr: 5e-4,
                pretrain_steps: 2000,
                train_iters: 15,
                train_back_iters: None,
                eval_iters: 20,
                jac_weight: 0.0,
                train_mode: BackwardMode::Implicit,
            },
            "ptb-1h" => Recipe {
                model: Transformer {
                    d: 192,
                    heads: 4,
                    inner: 768,
                    mem: 32,
                    dropout: 0.15,
                    out_dropout: 0.2,
                }
                .model(),
                batch: 16,
                seq_len: 48,
                steps: 16000,
                lr: 2e-3,
                pretrain_steps: 600,
                // Twelve forward iterations bring the training solves to about 1e-2 relative
                // residual (8 stopped at 2.8e-2); the backward's ten reach 5e-3 already.
                train_iters: 12,
                train_back_iters: Some(10),
                eval_iters: 16,
                // Keeps the solves near their equilibria (valid residual ≈ 8e-4 where it was 3e-2
                // without) and trains to a better perplexity in the same hour (README).
                jac_weight: 0.3,
                train_mode: BackwardMode::Implicit,
            },
            "trellis-tiny" => Recipe {
                model: Trellis {
                    d: 64,
                    hidden: 96,
                    dropout: 0.0,
                }
                .model(),
                // Segments short enough for the solve to span them: a kernel-2 trellis
                // carries information one position per iteration, so a segment of L tokens
                // needs at least L iterations and its cost per token grows with L. Eight
                // tokens (the last state carries the rest) in batches of 64 keep the products
                // large enough to run near the machine's speed.
                batch: 64,
                seq_len: 8,
                steps: 2400,
                lr: 1e-2,
                pretrain_steps: 200,
                train_iters: 8,
                train_back_iters: None,
                eval_iters: 14,
                jac_weight: 0.0,
                // Jacobian-free backpropagation (torchdeq's 1-step phantom gradient): at this
                // wall budget it trained to a lower perplexity than the implicit backward,
                // per step and per second (README).
                train_mode: BackwardMode::Phantom { k: 1, tau: 1.0 },
            },
            "ptb-trellis" => Recipe {
                model: Trellis {
                    d: 256,
                    hidden: 384,
                    dropout: 0.1,
                }
                .model(),
                batch: 16,
                seq_len: 64,
                steps: 20000,
                lr: 1e-3,
                pretrain_steps: 2000,
                train_iters: 15,
                train_back_iters: None,
                eval_iters: 20,
                jac_weight: 0.0,
                train_mode: BackwardMode::Implicit,
            },
            other => {
                return Err(format!(
                    "unknown preset `{other}` (choose one of: {})",
                    PRESETS.join(", ")
                ))
            }
        };
        Ok(recipe.build())
    }

    /// Plans the run for `steps` steps: the schedule's total, a warm-up of
    /// `steps / WARMUP_DIVISOR` steps (at least one), pre-training capped at
    /// `steps / PRETRAIN_DIVISOR`, an evaluation every `steps / EVALS_PER_RUN` steps.
    pub fn set_steps(&mut self, steps: usize) {
        self.steps = steps;
        self.schedule.total = steps;
        self.schedule.warmup = (steps / WARMUP_DIVISOR).max(1);
        self.pretrain_steps = self.pretrain_steps.min(steps / PRETRAIN_DIVISOR);
        self.eval_every = steps / EVALS_PER_RUN;
    }

    /// Peak learning rate `lr`, decaying to `lr / MIN_LR_DIVISOR`.
    pub fn set_lr(&mut self, lr: f64) {
        self.schedule.lr = lr;
        self.schedule.min_lr = lr / MIN_LR_DIVISOR;
    }

    /// The rule for extending (or shortening) a resumed run to `steps` steps: only `steps`
    /// and the schedule's `total` change. The learning rate from the resume step on is the
    /// warm-up + cosine schedule of a `steps`-step run with the same warm-up, peak and final
    /// rates: extending a run that has already decayed raises its rate again (a warm restart)
    /// and decays it to `min_lr` at the new last step. Evaluation interval and pre-training
    /// stay as they were.
    pub fn extend_to(&mut self, steps: usize) {
        self.steps = steps;
        self.schedule.total = steps;
    }

    /// Checks every size and setting; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        for (name, v) in [
            ("batch", self.batch),
            ("seq_len", self.seq_len),
            ("steps", self.steps),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be > 0"));
            }
        }
        let s = &self.schedule;
        if s.total != self.steps {
            return Err(format!(
                "`schedule.total` ({}) must equal `steps` ({})",
                s.total, self.steps
            ));
        }
        if !(s.lr.is_finite() && s.lr > 0.0) {
            return Err(format!("learning rate must be > 0, got {}", s.lr));
        }
        if !(s.min_lr.is_finite() && s.min_lr >= 0.0 && s.min_lr <= s.lr) {
            return Err(format!(
                "`schedule.min_lr` ({}) must lie in [0, lr = {}]",
                s.min_lr, s.lr
            ));
        }
        let a = &self.adam;
        for (name, beta) in [("adam.beta1", a.beta1), ("adam.beta2", a.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(format!("`{name}` must lie in [0, 1), got {beta}"));
            }
        }
        if !(a.eps.is_finite() && a.eps > 0.0) {
            return Err(format!("`adam.eps` must be > 0, got {}", a.eps));
        }
        if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
            return Err(format!(
                "`adam.weight_decay` must be ≥ 0, got {}",
                a.weight_decay
            ));
        }
        if !(self.clip.is_finite() && self.clip >= 0.0) {
            return Err(format!("`clip` must be ≥ 0 (0: none), got {}", self.clip));
        }
        if self.pretrain_steps > 0 && self.pretrain_depth == 0 {
            return Err("`pretrain_depth` must be > 0 when pre-training".into());
        }
        self.train_deq.validate().map_err(|e| e.to_string())?;
        self.eval_deq.validate().map_err(|e| e.to_string())?;
        self.eval.validate(&self.model)?;
        self.jac.validate()?;
        Ok(())
    }
}
