//! Fused multi-head causal attention over packed projections, with an optional memory of
//! earlier positions and Transformer-XL relative positions (Dai et al. 2019).
//!
//! For `T` queries over `K = M + T` keys (`M` memory positions first), per head, with
//! relative-distance embeddings `R_δ` and the biases `u`, `v`:
//!
//! `score[i, j] = α·((q_i + u)·k_j + (q_i + v)·R_{M+i−j})`, masked for `j > M + i`,
//! `out_i = Σ_j softmax_j(score)[i, j] · v_j`;
//!
//! without relative positions `score[i, j] = α·q_i·k_j`. One op replaces the chain
//! narrow → permute → product → scale → shift → mask → softmax → product → permute: the
//! queries, keys and values are read in place from the `[B, T, 3d]` output of the QKV
//! projection, the result is written in `[B, T, d]` order, and besides the inputs only each
//! score row's log-sum-exp is kept for the backward pass (`[B, H, T]`, where the composed
//! chain keeps six `[B, H, T, K]` tensors): the VJP recomputes the probabilities from it.
//! The VJP computes `∂scores` once for every input (`vjp_many`).
//!
//! With [`AttentionDropout`] (the reference's `dropatt`) the weights are
//! `Ã = A ⊙ M/(1 − p)` and `out_i = Σ_j Ã[i, j]·v_j`; the mask `M` is a hash of a seed and
//! each entry's index, regenerated in the backward pass rather than stored.
//!
//! The CPU loops are in [`crate::cpu::attention`]. On a CUDA device the same maths runs as a
//! composition of the engine's ops ([`causal_attention_composed`], also the reference the
//! tests compare the fused op with).

use crate::cpu::attention::{self as kernel, Dims, Grads, Inputs};
use crate::device::{common_device, cuda_vjp, on_cuda, Device};
use crate::float::Float;
use crate::kernels;
use crate::ops::attention_dropout::AttentionDropout;
use crate::ops::mask::Mask;
use crate::tape::{Backward, VjpTarget};
use crate::tensor::Tensor;
use crate::var::{record, Var};

/// The relative-position term of [`Var::causal_attention`]: `r` (`[K, H·d_h]`, embeddings of
/// distances `0..K`, already projected), and the content and position biases `u`, `v`
/// (`[H, d_h]` each).
#[derive(Clone, Copy)]
pub struct RelativePositions<'a, T: Float> {
    /// `[K, H·d_h]` projected embeddings of distances `0..K`.
    pub r: &'a Var<T>,
    /// `[H, d_h]` content bias (`r_w_bias`).
    pub u: &'a Var<T>,
    /// `[H, d_h]` position bias (`r_r_bias`).
    pub v: &'a Var<T>,
}

/// Which input each recorded position is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Qkv,
    Mem,
    R,
    U,
    V,
}

struct AttentionBackward<T: Float> {
    d: Dims,
    qkv: Tensor<T>,
    mem: Option<Tensor<T>>,
    rel: Option<(Tensor<T>, Tensor<T>, Tensor<T>)>,
    /// Log-sum-exp of each score row, `[B, H, T]`.
    lse: Tensor<T>,
    slots: Vec<Slot>,
}

impl<T: Float> AttentionBackward<T> {
    fn inputs(&self) -> Inputs<'_, T> {
        Inputs {
            qkv: self.qkv.data(),
            mem: self.mem.as_ref().map_or(&[][..], |m| m.data()),
            rel: self
                .rel
                .as_ref()
                .map(|(r, u, v)| (r.data(), u.data(), v.data())),
        }
    }
}

impl<T: Float> Backward<T> for AttentionBackward<T> {
    fn name(&self) -> &'static str {
        "causal_attention"
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        self.vjp_many(g, &mut [VjpTarget { k, dst, acc }]);
    }

    fn shares_work(&self) -> bool {
        true
    }

    fn vjp_many(&self, g: &[T], targets: &mut [VjpTarget<'_, T>]) {
        let mut grads = Grads {
            qkv: None,
            mem: None,
            r: None,
            u: None,
            v: None,
        };
        for t in targets.iter_mut() {
            let dst = Some((&mut *t.dst, t.acc));
            match self.slots[t.k] {
                Slot::Qkv => grads.qkv = dst,
                Slot::Mem => grads.mem = dst,
                Slot::R => grads.r = dst,
                Slot::U => grads.u = dst,
                Slot::V => grads.v = dst,
            }
        }
        kernel::backward(self.d, self.inputs(), self.lse.data(), g, grads);
    }
}

impl<T: Float> Var<T> {
    /// Multi-head causal attention from packed projections: `self` is `[B, T, 3·H·d_h]` (the
    /// queries, keys and values of `T` positions, each `H` heads of `d_h`), `mem_kv` the
    /// `[B, M, 2·H·d_h]` keys and values of `M` earlier positions, `rel` the relative-position
    /// term; scores are scaled by `scale`. Returns `[B, T, H·d_h]`. See the module docs for the
    /// maths. Panics on inconsistent shapes (naming the op and the shapes).
    pub fn causal_attention(
        &self,
        mem_kv: Option<&Var<T>>,
        rel: Option<RelativePositions<'_, T>>,
        heads: usize,
        scale: f64,
    ) -> Var<T> {
        self.causal_attention_with(mem_kv, rel, heads, scale, None)
    }

    /// [`Var::causal_attention`] with dropout on the attention probabilities: `dropout`
    /// drops each entry of `softmax(S)` (`[B, H, T, K]`, flat index order) by its hash and
    /// scales the kept ones by `1/(1 − p)`; the same seed gives the same mask every call.
    pub fn causal_attention_with(
        &self,
        mem_kv: Option<&Var<T>>,
        rel: Option<RelativePositions<'_, T>>,
        heads: usize,
        scale: f64,
        dropout: Option<AttentionDropout>,
    ) -> Var<T> {
        let mut d = check_shapes(self, mem_kv, rel.as_ref(), heads, scale);
        d.dropout = dropout.filter(|m| m.rate() > 0.0);
        let mut operands = vec![self.value()];
        operands.extend(mem_kv.map(Var::value));
        if let Some(p) = &rel {
            operands.extend([p.r.value(), p.u.value(), p.v.value()]);
        }
        if common_device("causal_attention", &operands) != Device::Cpu {
            return causal_attention_composed(self, mem_kv, rel, heads, scale, d.dropout);
        }
        let w = d.d();
        let mem_t = mem_kv.map(|m| m.value().clone());
        let rel_t = rel.as_ref().map(|p| {
            (
                p.r.value().clone(),
                p.u.value().clone(),
                p.v.value().clone(),
            )
        });
        let mut out = crate::pool::take(d.b * d.t * w);
        let mut lse = crate::pool::take(d.b * d.heads * d.t);
        let inputs = Inputs {
            qkv: self.value().data(),
            mem: mem_t.as_ref().map_or(&[][..], |m| m.data()),
            rel: rel_t
                .as_ref()
                .map(|(r, u, v)| (r.data(), u.data(), v.data())),
        };
        kernels::count_flops(nominal_flops(d, rel.is_some()));
        kernel::forward(d, inputs, &mut out, &mut lse);
        let value = Tensor::from_vec(out, &[d.b, d.t, w]);
        let mut vars: Vec<&Var<T>> = vec![self];
        let mut slots = vec![Slot::Qkv];
        if let Some(m) = mem_kv {
            vars.push(m);
            slots.push(Slot::Mem);
        }
        if let Some(p) = &rel {
            vars.extend([p.r, p.u, p.v]);
            slots.extend([Slot::R, Slot::U, Slot::V]);
        }
        let lse = Tensor::from_vec(lse, &[d.b, d.heads, d.t]);
        record(value, &vars, || AttentionBackward {
            d,
            qkv: self.value().clone(),
            mem: mem_t,
            rel: rel_t,
            lse,
            slots,
        })
    }
}

/// Multiply-adds of the forward products, for the engine's FLOP counters.
fn nominal_flops(d: Dims, rel: bool) -> u64 {
    let per_product = 2 * d.b * d.heads * d.t * d.keys() * d.dh;
    (per_product * if rel { 3 } else { 2 }) as u64
}

fn check_shapes<T: Float>(
    qkv: &Var<T>,
    mem: Option<&Var<T>>,
    rel: Option<&RelativePositions<'_, T>>,
    heads: usize,
    scale: f64,
) -> Dims {
    let s = qkv.shape();
    assert!(
        s.len() == 3 && heads > 0 && s[2].is_multiple_of(3 * heads),
        "causal_attention: qkv shape {s:?} is not [B, T, 3·H·d_h] for {heads} heads"
    );
    let (b, t, w) = (s[0], s[1], s[2] / 3);
    let m = match mem {
        Some(mv) => {
            let ms = mv.shape();
            assert!(
                ms.len() == 3 && ms[0] == b && ms[2] == 2 * w,
                "causal_attention: memory shape {ms:?} does not match qkv shape {s:?} \
                 (needs [{b}, M, {}])",
                2 * w
            );
            ms[1]
        }
        None => 0,
    };
    let dh = w / heads;
    if let Some(p) = rel {
        let (rs, us, vs) = (p.r.shape(), p.u.shape(), p.v.shape());
        assert!(
            rs == [m + t, w] && us == [heads, dh] && vs == [heads, dh],
            "causal_attention: relative positions r {rs:?}, u {us:?}, v {vs:?} do not match \
             qkv shape {s:?} with {m} memory positions (need r [{}, {w}], u and v [{heads}, {dh}])",
            m + t
        );
    }
    assert!(
        scale.is_finite(),
        "causal_attention: scale {scale} is not finite"
    );
    Dims {
        b,
        t,
        m,
        heads,
        dh,
        scale,
        dropout: None,
    }
}

/// [`Var::causal_attention_with`] built from the engine's primitive ops (narrow, permute,
/// batched products, [`Var::rel_shift`], masked fill, softmax, and the dropout mask as a
/// constant factor): the path on CUDA devices, and the reference that the fused CPU op is
/// tested against. It keeps every intermediate for the backward pass.
pub fn causal_attention_composed<T: Float>(
    qkv: &Var<T>,
    mem_kv: Option<&Var<T>>,
    rel: Option<RelativePositions<'_, T>>,
    heads: usize,
    scale: f64,
    dropout: Option<AttentionDropout>,
) -> Var<T> {
    let d = check_shapes(qkv, mem_kv, rel.as_ref(), heads, scale);
    let (b, t, m, dh, w, kk) = (d.b, d.t, d.m, d.dh, d.d(), d.keys());
    let split = |x: Var<T>, len: usize| x.reshape(&[b, len, heads, dh]).permute(&[0, 2, 1, 3]);
    let q = split(qkv.narrow(2, 0, w), t);
    let (mut key, mut val) = (qkv.narrow(2, w, w), qkv.narrow(2, 2 * w, w));
    if let Some(mv) = mem_kv {
        key = Var::concat(&[&mv.narrow(2, 0, w), &key], 1);
        val = Var::concat(&[&mv.narrow(2, w, w), &val], 1);
    }
    let (key, val) = (split(key, kk), split(val, kk));
    let scores = match rel {
        None => q.matmul_t(&key, false, true),
        Some(p) => {
            let content = q
                .add(&p.u.reshape(&[heads, 1, dh]))
                .matmul_t(&key, false, true);
            let qv = q
                .add(&p.v.reshape(&[heads, 1, dh]))
                .permute(&[1, 0, 2, 3])
                .reshape(&[heads, b * t, dh]);
            let r = p.r.reshape(&[kk, heads, dh]).permute(&[1, 0, 2]);
            let position = qv
                .matmul_t(&r, false, true)
                .reshape(&[heads, b, t, kk])
                .permute(&[1, 0, 2, 3])
                .rel_shift();
            content.add(&position)
        }
    };
    let mut probs = scores
        .mul_scalar(scale)
        .masked_fill(&Mask::causal_with_memory(t, m), f64::NEG_INFINITY)
        .softmax();
    if let Some(drop) = dropout.filter(|m| m.rate() > 0.0) {
        let mask = drop
            .mask_on::<T>(&[b, heads, t, kk], qkv.value().device())
            .expect("the operands' device is open");
        probs = probs.mul(&Var::constant(mask));
    }
    probs
        .matmul(&val)
        .permute(&[0, 2, 1, 3])
        .reshape(&[b, t, w])
}

struct RelShiftBackward {
    shape: [usize; 4],
    mem: usize,
}

impl<T: Float> Backward<T> for RelShiftBackward {
    fn name(&self) -> &'static str {
        "rel_shift"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let (t, k) = (self.shape[2], self.shape[3]);
        kernel::rel_shift_backward(g, t, k, self.mem, dst, acc);
    }

    cuda_vjp!(|op, _k, g, dst, acc| {
        crate::cuda::rel_shift::backward(g, op.shape[2], op.shape[3], dst, acc)
    });
}

impl<T: Float> Var<T> {
    /// Re-indexes `[B, H, T, K]` scores from distance order to key order: output `[.., i, j]`
    /// is input `[.., i, M + i − j]` where `M = K − T`, and 0 where `j > M + i` (positions
    /// the causal mask hides anyway). Transformer-XL's relative shift, done by index.
    pub fn rel_shift(&self) -> Var<T> {
        let s = self.shape();
        assert!(
            s.len() == 4 && s[3] >= s[2],
            "rel_shift: needs [B, H, T, K] with K ≥ T, got {s:?}"
        );
        let shape = [s[0], s[1], s[2], s[3]];
        let (t, k) = (s[2], s[3]);
        let mem = k - t;
        let value = match self.value().device() {
            Device::Cpu => {
                let x = self.value().data();
                let mut out = crate::pool::take_zeroed(x.len());
                kernel::rel_shift(x, t, k, mem, &mut out);
                Tensor::from_vec(out, s)
            }
            Device::Cuda(_) => on_cuda!(crate::cuda::rel_shift::forward(self.value(), t, k)),
        };
        record(value, &[self], || RelShiftBackward { shape, mem })
    }
}
