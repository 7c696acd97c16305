//! Multi-head causal self-attention with Transformer-XL relative positions and a memory of the
//! previous segment (Dai et al. 2019), as in the DEQ-Transformer.
//!
//! For queries at the `T` current positions and keys over `K = M + T` positions (`M` memory
//! positions first), with per-head biases `u = r_w_bias`, `v = r_r_bias` and relative-distance
//! embeddings `R_δ`:
//!
//! `score[i, j] = ((q_i + u)·k_j + (q_i + v)·R_{M+i-j}) / √d_h`,  masked for `j > M + i`,
//!
//! then softmax over `j` and a weighted sum of values. The scores, softmax and weighted sum are
//! one fused op of the engine ([`Var::causal_attention`]); this layer adds the projections.

use deq_autograd::{AttentionDropout, Float, RelativePositions, Var};

/// Re-indexes `[B, H, T, K]` scores from distance order to key order: output `[.., i, j]` is
/// input `[.., i, M + i − j]` where `M = K − T`, and 0 where `j > M + i` (positions the causal
/// mask hides anyway). The engine's [`Var::rel_shift`].
pub fn rel_shift<T: Float>(full: &Var<T>) -> Var<T> {
    full.rel_shift()
}

/// The weights of one relative attention, already prepared for a forward pass (weight
/// normalisation applied, position embeddings projected): see [`RelAttention::attend`].
pub struct RelAttention<'a, T: Float> {
    /// `[3·H·d_h, d]` query/key/value projection (no bias: the injection plays that role).
    pub w_qkv: &'a Var<T>,
    /// `[K, H·d_h]` projected embeddings of distances `0..K`.
    pub r: &'a Var<T>,
    /// `[d, H·d_h]` output projection and its `[d]` bias.
    pub w_o: &'a Var<T>,
    /// Output bias.
    pub b_o: &'a Var<T>,
    /// `[H, d_h]` content bias `u`.
    pub r_w_bias: &'a Var<T>,
    /// `[H, d_h]` position bias `v`.
    pub r_r_bias: &'a Var<T>,
    /// Number of heads `H`.
    pub heads: usize,
    /// Dropout on the attention probabilities, if any (fixed for a forward pass).
    pub dropout: Option<AttentionDropout>,
}

impl<T: Float> RelAttention<'_, T> {
    /// Attention of the last `T` positions of `cat` (`[B, K, d]`, memory first) over all `K`,
    /// with `inj` (`[B, K, 3·H·d_h]`) added to the QKV projection. Returns `[B, T, d]`.
    pub fn attend(&self, cat: &Var<T>, inj: &Var<T>, t: usize) -> Var<T> {
        let k = cat.dim(1);
        let mem = k - t;
        let hd = self.w_qkv.dim(0) / 3;
        let qkv = cat.linear(self.w_qkv, None).add(inj);
        let mem_kv = (mem > 0).then(|| qkv.narrow(1, 0, mem).narrow(2, hd, 2 * hd));
        self.attend_projected(&qkv.narrow(1, mem, t), mem_kv.as_ref())
    }

    /// Attention from projections already made: `qkv` (`[B, T, 3·H·d_h]`) of the current
    /// positions and `mem_kv` (`[B, M, 2·H·d_h]`) the keys and values of the memory. The
    /// DEQ-Transformer cell computes the memory's keys and values once per forward pass (they
    /// do not change across solver iterations) and calls this.
    pub fn attend_projected(&self, qkv: &Var<T>, mem_kv: Option<&Var<T>>) -> Var<T> {
        let dh = self.w_qkv.dim(0) / 3 / self.heads;
        let rel = RelativePositions {
            r: self.r,
            u: self.r_w_bias,
            v: self.r_r_bias,
        };
        let scale = 1.0 / (dh as f64).sqrt();
        qkv.causal_attention_with(mem_kv, Some(rel), self.heads, scale, self.dropout)
            .linear(self.w_o, Some(self.b_o))
    }
}
