//! The DEQ language model: embedding → injection → DEQ cell (through the implicit layer) →
//! output tied to the embedding, with cross-entropy loss.

use crate::cells::{DeqTransformerCell, TransformerConfig, TrellisConfig, TrellisNetCell};
use crate::layers::Linear;
use crate::params::{ParamId, ParamStore};
use deq_autograd::{Float, Rng, Tensor, Var};
use deq_solvers::implicit::{deq, jacobian_penalty, DeqConfig, DeqStats, VariationalDropout};
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
    /// of the injection starts about 50 times smaller than `qkv(z)`; with it about 6 times
    /// (the reference: about 4). Configurations written without the field: off.
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

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per model, never moved in hot code
enum Cell {
    Transformer {
        cell: DeqTransformerCell,
        inject: Linear,
    },
    Trellis {
        cell: TrellisNetCell,
        inject_w: ParamId,
        inject_b: ParamId,
    },
}

/// What a forward pass carries to the next segment (detached).
///
/// Transformer: `z` is the last `mem_len` equilibrium positions `[B, M, d]` and `u` the matching
/// injections `[B, M, 3d]`. TrellisNet: `z` is the last state `[B, 1, 2H]` and `u` the last
/// embedding `[B, 1, d]`.
#[derive(Clone, Debug, Default)]
pub struct Memory<T: Float> {
    /// Past states.
    pub z: Option<Tensor<T>>,
    /// Past injections or embeddings.
    pub u: Option<Tensor<T>>,
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

/// A request for the Jacobian penalty at the equilibrium: probes per estimate and the
/// generator they are drawn from.
pub struct JacobianProbe<'a> {
    /// Gaussian probes.
    pub n_vecs: usize,
    /// Where they come from.
    pub rng: &'a mut Rng,
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
                let inject = Linear::new(&mut store, "inject", d, 3 * d, true, false, 1.0, rng);
                let cell = DeqTransformerCell::new(&mut store, "cell", c, rng);
                Cell::Transformer { cell, inject }
            }
            CellConfig::Trellisnet(c) => {
                let h = c.hidden;
                let bound = 1.0 / (2.0 * d as f64).sqrt();
                let inject_w = store.uniform("inject.weight", &[2, d, 4 * h], bound, rng);
                let inject_b = store.uniform("inject.bias", &[4 * h], bound, rng);
                let cell = TrellisNetCell::new(&mut store, "cell", c, rng);
                Cell::Trellis {
                    cell,
                    inject_w,
                    inject_b,
                }
            }
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
    /// ([`jacobian_penalty`]).
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
        let device = p[self.emb.0].value().device();
        let mut emb = p[self.emb.0].embedding(tokens, &[batch, t]);
        if self.cfg.emb_scale {
            emb = emb.mul_scalar((d as f64).sqrt());
        }
        if let Some(r) = rng.as_deref_mut() {
            if self.cfg.emb_dropout > 0.0 {
                emb = VariationalDropout::new(&[batch, 1, d], self.cfg.emb_dropout, r).apply(&emb);
            }
        }
        let (out, stats, memory, jacobian) = match &self.cell {
            Cell::Transformer { cell, inject } => {
                let u = inject.forward(p, &emb);
                let memory = mem.z.as_ref().zip(mem.u.as_ref());
                let klen = t + memory.map_or(0, |(z, _)| z.dim(1));
                let eff = cell.prepare(p, memory, klen);
                let step = cell.step(batch, rng.as_deref_mut());
                let z0 = Tensor::zeros_on(&[batch, t, d], device);
                let res = deq(&step, &u, &eff, &z0, deq_cfg);
                let jacobian =
                    jac.map(|j| jacobian_penalty(&step, &u, &eff, res.z.value(), j.n_vecs, j.rng));
                let m = cell.cfg.mem_len;
                let memory = Memory {
                    z: keep_last(mem.z.as_ref(), res.z.value(), m),
                    u: keep_last(mem.u.as_ref(), u.value(), m),
                };
                (res.z, res.stats, memory, jacobian)
            }
            Cell::Trellis {
                cell,
                inject_w,
                inject_b,
            } => {
                let hist = match &mem.u {
                    Some(m) => Var::constant(m.clone()),
                    None => Var::constant(Tensor::zeros_on(&[batch, 1, d], device)),
                };
                let emb_ext = Var::concat(&[&hist, &emb], 1);
                let u = emb_ext
                    .causal_conv1d(&p[inject_w.0], Some(&p[inject_b.0]), 1)
                    .narrow(1, 1, t);
                let eff = cell.prepare(p);
                let h = cell.cfg.hidden;
                // No memory yet: a zero history on the parameters' device.
                let history = mem
                    .z
                    .clone()
                    .unwrap_or_else(|| Tensor::zeros_on(&[batch, 1, 2 * h], device));
                let step = cell.step(batch, Some(history), rng.as_deref_mut());
                let z0 = Tensor::zeros_on(&[batch, t, 2 * h], device);
                let res = deq(&step, &u, &eff, &z0, deq_cfg);
                let jacobian =
                    jac.map(|j| jacobian_penalty(&step, &u, &eff, res.z.value(), j.n_vecs, j.rng));
                let memory = Memory {
                    z: Some(last_position(res.z.value())),
                    u: Some(last_position(emb.value())),
                };
                // The output is the last d_embed channels of h.
                (res.z.narrow(2, h - d, d), res.stats, memory, jacobian)
            }
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

/// The last `m` positions of `[prev; cur]` along time (`None` when `m = 0`).
fn keep_last<T: Float>(prev: Option<&Tensor<T>>, cur: &Tensor<T>, m: usize) -> Option<Tensor<T>> {
    if m == 0 {
        return None;
    }
    let cat = match prev {
        Some(p) => Var::concat(&[&Var::constant(p.clone()), &Var::constant(cur.clone())], 1),
        None => Var::constant(cur.clone()),
    };
    let len = cat.dim(1);
    let keep = m.min(len);
    Some(cat.narrow(1, len - keep, keep).into_value())
}

/// `x[:, T-1:T, :]`.
fn last_position<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    let t = x.shape()[1];
    Var::constant(x.clone()).narrow(1, t - 1, 1).into_value()
}
