//! The DEQ language model: embedding → injection → DEQ cell (through the implicit layer) →
//! output tied to the embedding, with cross-entropy loss.

use crate::cells::{TransformerConfig, TransformerLayer, TrellisConfig, TrellisLayer};
use crate::params::{ParamId, ParamStore};
pub use crate::segment::{JacobianProbe, Memory};
use crate::segment::{Segment, SegmentOutput};
use deq_autograd::{Float, Rng, Tensor, Var};
use deq_solvers::implicit::{DeqConfig, DeqStats, VariationalDropout};
use serde::{Deserialize, Serialize};

/// Which cell, with its sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum CellConfig {
    /// The DEQ-Transformer block.
    Transformer(TransformerConfig),
    /// The TrellisNet layer.
    Trellisnet(TrellisConfig),
}

/// The model's architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Embedding width (the tied output's width too).
    pub d_embed: usize,
    /// Dropout on the embedding (one mask per sequence and feature, shared over time).
    pub emb_dropout: f64,
    /// Multiply the input embedding by `√d_embed`, as the reference DEQ-Transformer's adaptive
    /// embedding does (the tied output reads the unscaled table). Without it the token part
    /// of the injection starts about 50 times smaller than `qkv(z)`; with it 3 to 5 times
    /// for the presets (the reference's init: about 6; `models/tests/init_scale.rs`).
    /// Configurations written without the field: off.
    #[serde(default)]
    pub emb_scale: bool,
    /// Dropout on the equilibrium before the output layer (the reference's output dropout:
    /// one mask per sequence and feature, shared over time; training only). Configurations
    /// written without the field: 0.
    #[serde(default)]
    pub out_dropout: f64,
    /// The cell.
    pub cell: CellConfig,
}

impl ModelConfig {
    /// Checks sizes; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: usize| {
            if v == 0 {
                Err(format!("model size `{name}` must be > 0"))
            } else {
                Ok(())
            }
        };
        let prob = |name: &str, p: f64| {
            if (0.0..1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("dropout `{name}` must lie in [0, 1), got {p}"))
            }
        };
        positive("vocab", self.vocab)?;
        positive("d_embed", self.d_embed)?;
        prob("emb_dropout", self.emb_dropout)?;
        prob("out_dropout", self.out_dropout)?;
        match &self.cell {
            CellConfig::Transformer(c) => {
                positive("n_head", c.n_head)?;
                positive("d_inner", c.d_inner)?;
                prob("dropout", c.dropout)?;
                prob("pos_dropout", c.pos_dropout)?;
                prob("att_dropout", c.att_dropout)?;
                if c.d_model != self.d_embed {
                    return Err(format!(
                        "transformer d_model ({}) must equal d_embed ({})",
                        c.d_model, self.d_embed
                    ));
                }
                if c.d_model % c.n_head != 0 {
                    return Err(format!(
                        "d_model ({}) must be divisible by n_head ({})",
                        c.d_model, c.n_head
                    ));
                }
            }
            CellConfig::Trellisnet(c) => {
                positive("hidden", c.hidden)?;
                prob("dropout", c.dropout)?;
                prob("weight_drop", c.weight_drop)?;
                if c.hidden < self.d_embed {
                    return Err(format!(
                        "trellisnet hidden ({}) must be ≥ d_embed ({})",
                        c.hidden, self.d_embed
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The implicit layer: each cell's own injection, memory and solve.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per model, never moved in hot code
enum Cell {
    Transformer(TransformerLayer),
    Trellis(TrellisLayer),
}

/// One forward pass's result.
pub struct ForwardOutput<T: Float> {
    /// Mean cross-entropy over the segment's tokens.
    pub loss: Var<T>,
    /// The implicit layer's statistics.
    pub stats: DeqStats,
    /// Memory for the next segment.
    pub memory: Memory<T>,
    /// The Jacobian penalty `‖J_f(z*)‖_F² / N`, when asked for
    /// ([`LanguageModel::forward_regularised`]).
    pub jacobian: Option<Var<T>>,
}

/// A DEQ language model with its parameters.
#[derive(Clone, Debug)]
pub struct LanguageModel<T: Float> {
    /// Architecture.
    pub cfg: ModelConfig,
    /// Parameters.
    pub store: ParamStore<T>,
    emb: ParamId,
    out_bias: ParamId,
    cell: Cell,
}

impl<T: Float> LanguageModel<T> {
    /// A freshly initialised model (embedding `N(0, 0.02²)`, zero output bias).
    pub fn new(cfg: &ModelConfig, rng: &mut Rng) -> Self {
        let mut store = ParamStore::new();
        let d = cfg.d_embed;
        let emb = store.add("embedding", Tensor::randn(&[cfg.vocab, d], 0.02, rng));
        let out_bias = store.add("output.bias", Tensor::zeros(&[cfg.vocab]));
        let cell = match &cfg.cell {
            CellConfig::Transformer(c) => {
                Cell::Transformer(TransformerLayer::new(&mut store, c, rng))
            }
            CellConfig::Trellisnet(c) => Cell::Trellis(TrellisLayer::new(&mut store, d, c, rng)),
        };
        LanguageModel {
            cfg: cfg.clone(),
            store,
            emb,
            out_bias,
            cell,
        }
    }

    /// Width of the DEQ state per position.
    pub fn state_width(&self) -> usize {
        match &self.cfg.cell {
            CellConfig::Transformer(c) => c.d_model,
            CellConfig::Trellisnet(c) => 2 * c.hidden,
        }
    }

    /// Mean cross-entropy of `targets` given `tokens` (both `[B, T]` row-major) for one segment.
    ///
    /// `p` are the store's parameters as variables (leaves to train, constants to evaluate);
    /// `rng` draws dropout masks (`None`: evaluation). The DEQ runs with `deq_cfg`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        p: &[Var<T>],
        tokens: &[usize],
        targets: &[usize],
        batch: usize,
        mem: &Memory<T>,
        deq_cfg: &DeqConfig,
        rng: Option<&mut Rng>,
    ) -> ForwardOutput<T> {
        self.forward_regularised(p, tokens, targets, batch, mem, deq_cfg, rng, None)
    }

    /// [`LanguageModel::forward`], and with `jac` the Jacobian penalty of the cell at the
    /// segment's equilibrium, recorded through the injection and the parameters
    /// ([`deq_solvers::implicit::jacobian_penalty`]).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_regularised(
        &self,
        p: &[Var<T>],
        tokens: &[usize],
        targets: &[usize],
        batch: usize,
        mem: &Memory<T>,
        deq_cfg: &DeqConfig,
        rng: Option<&mut Rng>,
        jac: Option<JacobianProbe<'_>>,
    ) -> ForwardOutput<T> {
        let (logits, stats, memory, jacobian) =
            self.logits_and_penalty(p, tokens, batch, mem, deq_cfg, rng, jac);
        ForwardOutput {
            loss: logits.cross_entropy(targets),
            stats,
            memory,
            jacobian,
        }
    }

    /// Next-token logits `[B, T, vocab]` for `tokens` (`[B, T]`), with the layer's statistics
    /// and the memory for the next segment (see [`LanguageModel::forward`]).
    pub fn logits(
        &self,
        p: &[Var<T>],
        tokens: &[usize],
        batch: usize,
        mem: &Memory<T>,
        deq_cfg: &DeqConfig,
        rng: Option<&mut Rng>,
    ) -> (Var<T>, DeqStats, Memory<T>) {
        let (logits, stats, memory, _) =
            self.logits_and_penalty(p, tokens, batch, mem, deq_cfg, rng, None);
        (logits, stats, memory)
    }

    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn logits_and_penalty(
        &self,
        p: &[Var<T>],
        tokens: &[usize],
        batch: usize,
        mem: &Memory<T>,
        deq_cfg: &DeqConfig,
        mut rng: Option<&mut Rng>,
        jac: Option<JacobianProbe<'_>>,
    ) -> (Var<T>, DeqStats, Memory<T>, Option<Var<T>>) {
        let t = tokens.len() / batch;
        let d = self.cfg.d_embed;
        let mut emb = p[self.emb.0].embedding(tokens, &[batch, t]);
        if self.cfg.emb_scale {
            emb = emb.mul_scalar((d as f64).sqrt());
        }
        if let Some(r) = rng.as_deref_mut() {
            if self.cfg.emb_dropout > 0.0 {
                emb = VariationalDropout::new(&[batch, 1, d], self.cfg.emb_dropout, r).apply(&emb);
            }
        }
        let segment = Segment {
            p,
            emb: &emb,
            mem,
            deq_cfg,
            rng: rng.as_deref_mut(),
            jac,
        };
        let SegmentOutput {
            out,
            stats,
            memory,
            jacobian,
        } = match &self.cell {
            Cell::Transformer(layer) => layer.segment(segment),
            Cell::Trellis(layer) => layer.segment(segment),
        };
        let out = match rng {
            Some(r) if self.cfg.out_dropout > 0.0 => {
                VariationalDropout::new(&[batch, 1, d], self.cfg.out_dropout, r).apply(&out)
            }
            _ => out,
        };
        let logits = out.linear(&p[self.emb.0], Some(&p[self.out_bias.0]));
        (logits, stats, memory, jacobian)
    }

    /// The parameters the embedding and output use (for reporting).
    pub fn embedding_id(&self) -> ParamId {
        self.emb
    }
}
