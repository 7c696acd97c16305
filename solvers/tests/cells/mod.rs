//! Test cells for the implicit layer, written only against the public autograd API.
#![allow(dead_code)]

use deq_autograd::{Float, Mask, Rng, Tensor, Var};

/// `f(z) = tanh(z·Wᵀ + x·Uᵀ + b)`; params `[W, U, b]`.
pub fn tanh_cell<T: Float>(z: &Var<T>, x: &Var<T>, p: &[Var<T>]) -> Var<T> {
    z.linear(&p[0], None)
        .add(&x.linear(&p[1], Some(&p[2])))
        .tanh()
}

/// Parameters of [`tanh_cell`] with `‖W‖₂ ≈ radius` (scaled by a power-iteration estimate).
pub fn tanh_params<T: Float>(
    hidden: usize,
    input: usize,
    radius: f64,
    rng: &mut Rng,
) -> Vec<Tensor<T>> {
    let w0 = Tensor::<f64>::randn(&[hidden, hidden], 1.0, rng);
    let norm = spectral_norm(&w0);
    let w = w0.map(|v| v * radius / norm).cast::<T>();
    let u = Tensor::<T>::randn(&[hidden, input], 1.0 / (input as f64).sqrt(), rng);
    let b = Tensor::<T>::randn(&[hidden], 0.1, rng);
    vec![w, u, b]
}

/// Largest singular value of a square matrix by power iteration on `WᵀW`.
pub fn spectral_norm(w: &Tensor<f64>) -> f64 {
    let n = w.shape()[0];
    let m = w.data();
    let mut v = vec![1.0 / (n as f64).sqrt(); n];
    let mut sigma = 0.0;
    for _ in 0..500 {
        let wv: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| m[i * n + j] * v[j]).sum())
            .collect();
        let wtwv: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| m[i * n + j] * wv[i]).sum())
            .collect();
        let norm = wtwv.iter().map(|a| a * a).sum::<f64>().sqrt();
        sigma = norm.sqrt();
        v = wtwv.iter().map(|a| a / norm).collect();
    }
    sigma
}

/// Multi-head causal self-attention of `h` (`[B, T, d]`) with `heads` heads:
/// params `[W_qkv (3d×d), b_qkv, W_o (d×d), b_o]`.
pub fn attention<T: Float>(h: &Var<T>, p: &[Var<T>], heads: usize) -> Var<T> {
    let (b, t, d) = (h.dim(0), h.dim(1), h.dim(2));
    let dh = d / heads;
    let qkv = h.linear(&p[0], Some(&p[1]));
    let split = |i: usize| {
        qkv.narrow(2, i * d, d)
            .reshape(&[b, t, heads, dh])
            .permute(&[0, 2, 1, 3])
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let scores = q
        .matmul_t(&k, false, true)
        .mul_scalar(1.0 / (dh as f64).sqrt())
        .masked_fill(&Mask::causal(t), f64::NEG_INFINITY);
    let ctx = scores
        .softmax()
        .matmul(&v)
        .permute(&[0, 2, 1, 3])
        .reshape(&[b, t, d]);
    ctx.linear(&p[2], Some(&p[3]))
}

/// A small post-LN transformer cell: `h = LN₁(z/2 + x + MHA(z + x))`, `f = LN₂(h + FFN(h))`.
/// Params: attention's four, then `[g₁, β₁, W₁ (f×d), b₁, W₂ (d×f), b₂, g₂, β₂]`. Halving `z` in
/// the residual keeps the map contractive enough for tight solves in tests.
pub fn transformer_cell<T: Float>(z: &Var<T>, x: &Var<T>, p: &[Var<T>]) -> Var<T> {
    let att = attention(&z.add(x), &p[..4], 2);
    let h = z
        .mul_scalar(0.5)
        .add(x)
        .add(&att)
        .layer_norm_affine(&p[4], &p[5], 1e-5);
    let ffn = h
        .linear(&p[6], Some(&p[7]))
        .relu()
        .linear(&p[8], Some(&p[9]));
    h.add(&ffn).layer_norm_affine(&p[10], &p[11], 1e-5)
}

/// Parameters of [`transformer_cell`] for width `d`, FFN width `ff`, PyTorch-style uniform
/// initialisation scaled by `scale`.
pub fn transformer_params<T: Float>(
    d: usize,
    ff: usize,
    scale: f64,
    rng: &mut Rng,
) -> Vec<Tensor<T>> {
    let mut lin = |out: usize, inp: usize| {
        let bound = scale / (inp as f64).sqrt();
        (
            Tensor::<T>::rand_uniform(&[out, inp], -bound, bound, rng),
            Tensor::<T>::rand_uniform(&[out], -bound, bound, rng),
        )
    };
    let (wqkv, bqkv) = lin(3 * d, d);
    let (wo, bo) = lin(d, d);
    let (w1, b1) = lin(ff, d);
    let (w2, b2) = lin(d, ff);
    let ln = || (Tensor::<T>::ones(&[d]), Tensor::<T>::zeros(&[d]));
    let (g1, be1) = ln();
    let (g2, be2) = ln();
    vec![wqkv, bqkv, wo, bo, g1, be1, w1, b1, w2, b2, g2, be2]
}

/// The forward solve of a random [`transformer_cell`] (width 8, FFN 16, 4 positions, unit
/// initialisation scale) on `b` samples of injections drawn after its parameters from
/// `seed`: `implicit_grad.rs`'s cells, solved from zeros with `cfg`.
pub fn solve_random_transformer(
    seed: u64,
    b: usize,
    cfg: &deq_solvers::SolverConfig,
) -> (Tensor<f64>, deq_solvers::SolveStats) {
    let (d, t) = (8, 4);
    let mut rng = Rng::new(seed);
    let params: Vec<Var<f64>> = transformer_params::<f64>(d, 16, 1.0, &mut rng)
        .into_iter()
        .map(Var::constant)
        .collect();
    let x = Var::constant(Tensor::randn(&[b, t, d], 1.0, &mut rng));
    deq_autograd::no_grad(|| {
        let f =
            |z: &Tensor<f64>| transformer_cell(&Var::constant(z.clone()), &x, &params).into_value();
        deq_solvers::solve(cfg, f, &Tensor::zeros(&[b, t, d]))
    })
}

/// A TrellisNet-form cell over `z = [h; c]` (`[B, T, 2d]`): a causal convolution of kernel 2
/// over `h` plus the injection `x` (`[B, T, 4d]`) gives the gates, then
/// `c' = σ(f)·c + σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`. Params `[W (2×d×4d), b (4d)]`.
pub fn trellis_cell<T: Float>(z: &Var<T>, x: &Var<T>, p: &[Var<T>]) -> Var<T> {
    let d = z.dim(2) / 2;
    let (h, c) = (z.narrow(2, 0, d), z.narrow(2, d, d));
    let pre = h.causal_conv1d(&p[0], Some(&p[1]), 1).add(x);
    let gate = |i: usize| pre.narrow(2, i * d, d);
    let (ig, fg, og, gg) = (
        gate(0).sigmoid(),
        gate(1).sigmoid(),
        gate(2).sigmoid(),
        gate(3).tanh(),
    );
    let c_new = fg.mul(&c).add(&ig.mul(&gg));
    let h_new = og.mul(&c_new.tanh());
    Var::concat(&[&h_new, &c_new], 2)
}

/// Parameters of [`trellis_cell`].
pub fn trellis_params<T: Float>(d: usize, scale: f64, rng: &mut Rng) -> Vec<Tensor<T>> {
    let bound = scale / (2.0 * d as f64).sqrt();
    vec![
        Tensor::<T>::rand_uniform(&[2, d, 4 * d], -bound, bound, rng),
        Tensor::<T>::rand_uniform(&[4 * d], -bound, bound, rng),
    ]
}
