//! The DEQ-Transformer cell (Bai et al. 2019, §4; locuslab/deq `deq_transformer.py`):
//!
//! `f(z; u) = LN(h + FFN(h))`, `h = LN(z + Attn([z_mem; z]·W_qkv + [u_mem; u]; R))`
//!
//! The injection `u` (`[B, T, 3d]`, computed once from the embedding) enters the QKV
//! projection; attention uses Transformer-XL relative positions over the previous segment's
//! equilibrium (`mem_len` positions, detached) followed by the current one. The memory's keys
//! and values `z_mem·W_kv + u_mem,kv` do not change across solver iterations, so they are
//! computed once per forward pass in [`DeqTransformerCell::prepare`] and each iteration
//! projects only the `T` current positions (the memory's queries are never used); both residual blocks
//! are post-LayerNorm without affine parameters; weight normalisation is applied once per
//! forward pass in [`DeqTransformerCell::prepare`], and variational dropout masks are drawn once
//! per forward pass and reused by every solver iteration.

use crate::layers::{sinusoid, Linear, RelAttention};
use crate::params::{ParamId, ParamStore};
use deq_autograd::{AttentionDropout, Float, Rng, Tensor, Var};
use deq_solvers::implicit::{ImplicitCell, VariationalDropout};
use serde::{Deserialize, Serialize};

/// Sizes of the DEQ-Transformer cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Model width `d` (= embedding width; tied output).
    pub d_model: usize,
    /// Attention heads; `d_model` must be divisible by it.
    pub n_head: usize,
    /// FFN hidden width.
    pub d_inner: usize,
    /// Positions of the previous segment kept as attention memory.
    pub mem_len: usize,
    /// Variational dropout on the attention output, the FFN's inner activation and its
    /// output, as the reference's `dropout` (training only; the masks are drawn once per
    /// forward pass and shared by every solver iteration and over time).
    pub dropout: f64,
    /// Dropout on the sinusoidal position embeddings before their projection (the
    /// reference's `pos_drop`), one `[K, d]` mask per forward pass; 0 (the serde default)
    /// turns it off and draws nothing.
    #[serde(default)]
    pub pos_dropout: f64,
    /// Dropout on the attention probabilities (the reference's `dropatt`): one mask over
    /// `[B, H, T, K]` per forward pass, a hash of a seed drawn per pass
    /// ([`deq_autograd::AttentionDropout`]), so every solver iteration and the backward pass
    /// see the same one; 0 (the serde default) turns it off.
    #[serde(default)]
    pub att_dropout: f64,
    /// Weight-normalise the linear maps.
    pub weight_norm: bool,
}

/// The cell's parameters (ids into the model's store).
#[derive(Clone, Debug)]
pub struct DeqTransformerCell {
    /// Configuration.
    pub cfg: TransformerConfig,
    qkv: Linear,
    r_net: Linear,
    o_net: Linear,
    ff1: Linear,
    ff2: Linear,
    r_w_bias: ParamId,
    r_r_bias: ParamId,
}

impl DeqTransformerCell {
    /// Registers the cell's parameters under `name.*`.
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        cfg: &TransformerConfig,
        rng: &mut Rng,
    ) -> Self {
        let (d, wn) = (cfg.d_model, cfg.weight_norm);
        let dh = d / cfg.n_head;
        let mut lin = |n: &str, inp, out, bias| {
            Linear::new(store, &format!("{name}.{n}"), inp, out, bias, wn, 1.0, rng)
        };
        let qkv = lin("qkv", d, 3 * d, false);
        let r_net = lin("r_net", d, d, false);
        let o_net = lin("o_net", d, d, true);
        let ff1 = lin("ff1", d, cfg.d_inner, true);
        let ff2 = lin("ff2", cfg.d_inner, d, true);
        let r_w_bias = store.add(
            &format!("{name}.r_w_bias"),
            Tensor::randn(&[cfg.n_head, dh], 0.02, rng),
        );
        let r_r_bias = store.add(
            &format!("{name}.r_r_bias"),
            Tensor::randn(&[cfg.n_head, dh], 0.02, rng),
        );
        DeqTransformerCell {
            cfg: cfg.clone(),
            qkv,
            r_net,
            o_net,
            ff1,
            ff2,
            r_w_bias,
            r_r_bias,
        }
    }

    /// The per-forward-pass parameters of the cell, in the order [`TransformerStep`] expects:
    /// weight-normalised weights, the projected position embeddings for `klen` keys, and, with
    /// a memory (`z_mem` `[B, M, d]` and its injection `u_mem` `[B, M, 3d]`, both detached),
    /// the memory's keys and values `[B, M, 2d]`. Computed once, outside the solver, on the
    /// caller's tape. `rng` draws the positional dropout mask (`None`: evaluation).
    pub fn prepare<T: Float>(
        &self,
        p: &[Var<T>],
        mem: Option<(&Tensor<T>, &Tensor<T>)>,
        klen: usize,
        rng: Option<&mut Rng>,
    ) -> Vec<Var<T>> {
        let d = self.cfg.d_model;
        let device = p[self.o_net.b.expect("o_net bias").0].value().device();
        let mut pos = Var::constant(
            sinusoid::<T>(klen, d)
                .to_device(device)
                .expect("the parameters' device is open"),
        );
        if let Some(r) = rng.filter(|_| self.cfg.pos_dropout > 0.0) {
            pos = VariationalDropout::new(&[klen, d], self.cfg.pos_dropout, r).apply(&pos);
        }
        let w_qkv = self.qkv.weight(p);
        let mem_kv = mem.map(|(z, u)| {
            Var::constant(z.clone())
                .linear(&w_qkv.narrow(0, d, 2 * d), None)
                .add(&Var::constant(u.clone()).narrow(2, d, 2 * d))
        });
        let mut e = vec![
            w_qkv,
            self.r_net.forward(p, &pos),
            self.o_net.weight(p),
            p[self.o_net.b.expect("o_net bias").0].clone(),
            p[self.r_w_bias.0].clone(),
            p[self.r_r_bias.0].clone(),
            self.ff1.weight(p),
            p[self.ff1.b.expect("ff1 bias").0].clone(),
            self.ff2.weight(p),
            p[self.ff2.b.expect("ff2 bias").0].clone(),
        ];
        e.extend(mem_kv);
        e
    }

    /// A cell application context for one forward pass: freshly drawn dropout masks
    /// (`rng = None`: evaluation, no dropout).
    pub fn step<T: Float>(&self, batch: usize, mut rng: Option<&mut Rng>) -> TransformerStep<T> {
        let shape = [batch, 1, self.cfg.d_model];
        let att_drop = match rng.as_deref_mut() {
            Some(r) if self.cfg.att_dropout > 0.0 => {
                Some(AttentionDropout::new(self.cfg.att_dropout, r.next_u64()))
            }
            _ => None,
        };
        let (drop_attn, drop_ffn, drop_inner) = match rng {
            Some(r) if self.cfg.dropout > 0.0 => (
                VariationalDropout::new(&shape, self.cfg.dropout, r),
                VariationalDropout::new(&shape, self.cfg.dropout, r),
                VariationalDropout::new(&[batch, 1, self.cfg.d_inner], self.cfg.dropout, r),
            ),
            _ => (
                VariationalDropout::identity(),
                VariationalDropout::identity(),
                VariationalDropout::identity(),
            ),
        };
        TransformerStep {
            heads: self.cfg.n_head,
            att_drop,
            drop_attn,
            drop_ffn,
            drop_inner,
        }
    }
}

/// One forward pass's view of the cell: `f(z, u, prepared params)` with `u` the `[B, T, 3d]`
/// injection of the current positions.
pub struct TransformerStep<T: Float> {
    heads: usize,
    att_drop: Option<AttentionDropout>,
    drop_attn: VariationalDropout<T>,
    drop_ffn: VariationalDropout<T>,
    drop_inner: VariationalDropout<T>,
}

impl<T: Float> ImplicitCell<T> for TransformerStep<T> {
    fn apply(&self, z: &Var<T>, u: &Var<T>, e: &[Var<T>]) -> Var<T> {
        let attn = RelAttention {
            w_qkv: &e[0],
            r: &e[1],
            w_o: &e[2],
            b_o: &e[3],
            r_w_bias: &e[4],
            r_r_bias: &e[5],
            heads: self.heads,
            dropout: self.att_drop,
        };
        let qkv = z.linear(&e[0], None).add(u);
        let a = self
            .drop_attn
            .apply(&attn.attend_projected(&qkv, e.get(10)));
        let h = z.add(&a).layer_norm(1e-5);
        let inner = self.drop_inner.apply(&h.linear(&e[6], Some(&e[7])).relu());
        let ff = inner.linear(&e[8], Some(&e[9]));
        h.add(&self.drop_ffn.apply(&ff)).layer_norm(1e-5)
    }
}
