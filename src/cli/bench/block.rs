//! The W2 block: one weight-tied DEQ-Transformer layer as in `../shared/BENCH.md`:
//! `f(z) = LN₂(h + FFN(h))`, `h = LN₁(z + MHA(z + x_inj))`, 4 heads of 64, causal attention
//! scaled by 1/8, FFN 256 → 1024 → 256 with ReLU, affine LayerNorms (eps 1e-5), PyTorch-default
//! uniform initialisation.

use deq_autograd::{Rng, Tensor, Var};

/// Width, heads and FFN width.
pub const D: usize = 256;
const HEADS: usize = 4;
const FF: usize = 1024;

/// The block's parameters in the order [`block`] reads them.
pub fn params(rng: &mut Rng) -> Vec<Tensor<f32>> {
    let mut lin = |out: usize, inp: usize| {
        let bound = 1.0 / (inp as f64).sqrt();
        vec![
            Tensor::rand_uniform(&[out, inp], -bound, bound, rng),
            Tensor::rand_uniform(&[out], -bound, bound, rng),
        ]
    };
    let mut p = Vec::new();
    p.extend(lin(3 * D, D)); // qkv
    p.extend(lin(D, D)); // out
    p.extend(lin(FF, D)); // ffn 1
    p.extend(lin(D, FF)); // ffn 2
    for _ in 0..2 {
        p.push(Tensor::ones(&[D]));
        p.push(Tensor::zeros(&[D]));
    }
    p
}

/// `f(z, x_inj)`.
pub fn block(z: &Var<f32>, x: &Var<f32>, p: &[Var<f32>]) -> Var<f32> {
    let dh = D / HEADS;
    let att = z
        .add(x)
        .linear(&p[0], Some(&p[1]))
        .causal_attention(None, None, HEADS, 1.0 / (dh as f64).sqrt())
        .linear(&p[2], Some(&p[3]));
    let h = z.add(&att).layer_norm_affine(&p[8], &p[9], 1e-5);
    let ffn = h
        .linear(&p[4], Some(&p[5]))
        .relu()
        .linear(&p[6], Some(&p[7]));
    h.add(&ffn).layer_norm_affine(&p[10], &p[11], 1e-5)
}
