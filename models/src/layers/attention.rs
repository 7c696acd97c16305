//! Multi-head causal self-attention with Transformer-XL relative positions and a memory of the
//! previous segment (Dai et al. 2019), as in the DEQ-Transformer.
//!
//! For queries at the `T` current positions and keys over `K = M + T` positions (`M` memory
//! positions first), with per-head biases `u = r_w_bias`, `v = r_r_bias` and relative-distance
//! embeddings `R_δ`:
//!
//! `score[i, j] = ((q_i + u)·k_j + (q_i + v)·R_{M+i-j}) / √d_h`,  masked for `j > M + i`,
//!
//! then softmax over `j` and a weighted sum of values. The position term is computed for all
//! distances at once (`(q + v)·Rᵀ`, one batched product) and re-indexed by [`rel_shift`].

use deq_autograd::{kernels, record, Backward, Device, Float, Mask, Tensor, Var};

struct RelShiftBackward {
    shape: [usize; 4],
    mem: usize,
}

impl<T: Float> Backward<T> for RelShiftBackward {
    fn name(&self) -> &'static str {
        "rel_shift"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let [bh, _, t, k] = [
            self.shape[0] * self.shape[1],
            0,
            self.shape[2],
            self.shape[3],
        ];
        kernels::prepare(dst, acc);
        for row in 0..bh * t {
            let i = row % t;
            let (gr, dr) = (&g[row * k..(row + 1) * k], &mut dst[row * k..(row + 1) * k]);
            for j in 0..=(self.mem + i).min(k - 1) {
                dr[self.mem + i - j] += gr[j];
            }
        }
    }
}

/// Re-indexes `[B, H, T, K]` scores from distance order to key order: output `[.., i, j]` is
/// input `[.., i, M + i − j]` where `M = K − T`, and 0 where `j > M + i` (positions the causal
/// mask hides anyway).
pub fn rel_shift<T: Float>(full: &Var<T>) -> Var<T> {
    let s = full.shape();
    assert!(
        s.len() == 4 && s[3] >= s[2],
        "rel_shift: needs [B, H, T, K] with K ≥ T, got {s:?}"
    );
    let shape = [s[0], s[1], s[2], s[3]];
    let (t, k) = (s[2], s[3]);
    let mem = k - t;
    if full.value().device() != Device::Cpu {
        return rel_shift_by_gather(full, shape, mem);
    }
    let x = full.value().data();
    let mut out = vec![T::ZERO; x.len()];
    for row in 0..s[0] * s[1] * t {
        let i = row % t;
        let (xr, or) = (&x[row * k..(row + 1) * k], &mut out[row * k..(row + 1) * k]);
        for j in 0..=(mem + i).min(k - 1) {
            or[j] = xr[mem + i - j];
        }
    }
    record(Tensor::from_vec(out, s), &[full], || RelShiftBackward {
        shape,
        mem,
    })
}

/// [`rel_shift`] from engine ops alone, for tensors on a device: the values, with one zero
/// appended, form a `[N + 1, 1]` table, and an embedding lookup gathers each output entry
/// (index `N`, the zero, where `j > M + i`); its VJP is the matching scatter-add.
fn rel_shift_by_gather<T: Float>(full: &Var<T>, shape: [usize; 4], mem: usize) -> Var<T> {
    let (t, k) = (shape[2], shape[3]);
    let numel = full.numel();
    let zero = Var::constant(Tensor::zeros_on(&[1, 1], full.value().device()));
    let table = Var::concat(&[&full.reshape(&[numel, 1]), &zero], 0);
    let ids: Vec<usize> = (0..numel)
        .map(|p| {
            let (row, j) = (p / k, p % k);
            let i = row % t;
            if j <= mem + i {
                row * k + mem + i - j
            } else {
                numel
            }
        })
        .collect();
    table.embedding(&ids, &[numel]).reshape(&shape)
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
}

impl<T: Float> RelAttention<'_, T> {
    /// Attention of the last `T` positions of `cat` (`[B, K, d]`, memory first) over all `K`,
    /// with `inj` (`[B, K, 3·H·d_h]`) added to the QKV projection. Returns `[B, T, d]`.
    pub fn attend(&self, cat: &Var<T>, inj: &Var<T>, t: usize) -> Var<T> {
        let (b, k) = (cat.dim(0), cat.dim(1));
        let mem = k - t;
        let hd = self.w_qkv.dim(0) / 3;
        let (h, dh) = (self.heads, hd / self.heads);
        let qkv = cat.linear(self.w_qkv, None).add(inj);
        let heads = |x: Var<T>, len: usize| x.reshape(&[b, len, h, dh]).permute(&[0, 2, 1, 3]);
        let q = heads(qkv.narrow(1, mem, t).narrow(2, 0, hd), t);
        let key = heads(qkv.narrow(2, hd, hd), k);
        let val = heads(qkv.narrow(2, 2 * hd, hd), k);
        // Content term (q + u)·kᵀ: [B, H, T, K].
        let ac = q
            .add(&self.r_w_bias.reshape(&[h, 1, dh]))
            .matmul_t(&key, false, true);
        // Position term (q + v)·Rᵀ for every distance, as one product per head.
        let qv = q
            .add(&self.r_r_bias.reshape(&[h, 1, dh]))
            .permute(&[1, 0, 2, 3])
            .reshape(&[h, b * t, dh]);
        let r = self.r.reshape(&[k, h, dh]).permute(&[1, 0, 2]);
        let bd_full = qv
            .matmul_t(&r, false, true)
            .reshape(&[h, b, t, k])
            .permute(&[1, 0, 2, 3]);
        let scores = ac
            .add(&rel_shift(&bd_full))
            .mul_scalar(1.0 / (dh as f64).sqrt())
            .masked_fill(&Mask::causal_with_memory(t, mem), f64::NEG_INFINITY);
        let ctx = scores
            .softmax()
            .matmul(&val)
            .permute(&[0, 2, 1, 3])
            .reshape(&[b, t, hd]);
        ctx.linear(self.w_o, Some(self.b_o))
    }
}
