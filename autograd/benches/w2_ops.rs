//! The hot ops of the W2 / W3 workloads (`../shared/BENCH.md`), one at a time, in f32, at the
//! exact shapes `deq bench` runs them: batch 8 × sequence 128 = 1024 rows, width 256, 4 heads of
//! 64, FFN 1024, and W3's `[1024, 10000]` logits.
//!
//! Why: `deq bench` times whole solves; when a W2 / W3 figure moves, these say which op moved.
//! Each op is measured as
//! - `fwd`: the forward with recording off (`no_grad`), what every solver iteration pays;
//! - `vjp_*`: one VJP replayed on a single recording (the cached pruned plan and gradient
//!   buffers, results borrowed through `Tape::vjp_with`, nothing copied out), what every
//!   adjoint-solve iteration pays. `vjp_x` is the input-only VJP of the z-only adjoint solve
//!   (weight-gradient products skipped); `vjp_full` adds the weight and bias gradients, as
//!   the one final parameter VJP does.
//! - `fwd_vjp` (cross-entropy only): record the forward on a fresh tape and take the VJP, since
//!   the fused op does its backward's work during the recorded forward.
//!
//! `faer_*` rows are the yardstick: faer called directly on the same shapes (the linear layers
//! with `Par::rayon`, the 32 head products with its sequential kernel split across the
//! threads). Every product through the engine should reach 0.9 of its faer row.
//!
//! Throughput: for the matrix products it is counted in floating-point operations (`2·m·n·k`
//! per product), so criterion's `Gelem/s` reads as GFLOP/s; for the element-wise ops it is
//! the number of tensor elements.
//!
//! `cargo bench -p deq-autograd --bench w2_ops` (under a minute; set `RAYON_NUM_THREADS=2` to
//! match `deq bench`'s default).

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use deq_autograd::{no_grad, Mask, Rng, Tape, Tensor, Var};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

/// Batch, sequence, width, heads, head width, FFN width and vocabulary of W2 / W3.
const B: usize = 8;
const T: usize = 128;
const D: usize = 256;
const H: usize = 4;
const DH: usize = D / H;
const FF: usize = 1024;
const VOCAB: usize = 10000;

/// Short runs: the whole file takes well under a minute on 2 cores.
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    g
}

/// One replayed VJP of `y` with respect to `wrt`; the gradients are only looked at.
fn replay(tape: &Tape<f32>, y: &Var<f32>, cot: &Tensor<f32>, wrt: &[&Var<f32>]) {
    tape.vjp_with(&[y], &[cot], wrt, |_, g| {
        black_box(g);
    });
}

/// The four linear layers of the block on `[8, 128, in]` with bias, as `Var::linear` runs them
/// (`x·Wᵀ + b`, `W` in PyTorch's `[out, in]` layout).
fn linears(c: &mut Criterion) {
    let mut g = group(c, "w2_linear_f32");
    let shapes = [
        ("qkv_256x768", D, 3 * D),
        ("out_256x256", D, D),
        ("ffn1_256x1024", D, FF),
        ("ffn2_1024x256", FF, D),
    ];
    for (name, inp, out) in shapes {
        let mut rng = Rng::new(1);
        let bound = 1.0 / (inp as f64).sqrt();
        let x = Tensor::<f32>::randn(&[B, T, inp], 1.0, &mut rng);
        let w = Tensor::<f32>::rand_uniform(&[out, inp], -bound, bound, &mut rng);
        let b = Tensor::<f32>::rand_uniform(&[out], -bound, bound, &mut rng);
        let cot = Tensor::<f32>::randn(&[B, T, out], 1.0, &mut rng);
        let flop = (2 * B * T * inp * out) as u64;

        let (xc, wc, bc) = (
            Var::constant(x.clone()),
            Var::constant(w.clone()),
            Var::constant(b.clone()),
        );
        g.throughput(Throughput::Elements(flop));
        g.bench_function(format!("{name}/fwd"), |bench| {
            bench.iter(|| no_grad(|| black_box(xc.linear(&wc, Some(&bc)))))
        });

        let tape = Tape::new();
        let (xv, wv, bv) = (tape.leaf(x), tape.leaf(w), tape.leaf(b));
        let y = xv.linear(&wv, Some(&bv));
        g.bench_function(format!("{name}/vjp_x"), |bench| {
            bench.iter(|| replay(&tape, &y, &cot, &[&xv]))
        });
        g.throughput(Throughput::Elements(2 * flop));
        g.bench_function(format!("{name}/vjp_full"), |bench| {
            bench.iter(|| replay(&tape, &y, &cot, &[&xv, &wv, &bv]))
        });
        // The yardstick: faer called directly on the same operands into a preallocated
        // output, `Par::rayon` over the pool's threads (the forward `x·Wᵀ`, and the input
        // gradient `G·W`).
        let par = Par::rayon(rayon::current_num_threads());
        let mut out_buf = vec![0.0f32; B * T * out];
        let mut dx_buf = vec![0.0f32; B * T * inp];
        g.throughput(Throughput::Elements(flop));
        g.bench_function(format!("{name}/faer_fwd"), |bench| {
            bench.iter(|| {
                let xm = MatRef::from_row_major_slice(xv.value().data(), B * T, inp);
                let wm = MatRef::from_row_major_slice(wv.value().data(), out, inp);
                let om = MatMut::from_row_major_slice_mut(&mut out_buf, B * T, out);
                faer::linalg::matmul::matmul(om, Accum::Replace, xm, wm.transpose(), 1.0, par);
            })
        });
        g.bench_function(format!("{name}/faer_vjp_x"), |bench| {
            bench.iter(|| {
                let gm = MatRef::from_row_major_slice(cot.data(), B * T, out);
                let wm = MatRef::from_row_major_slice(wv.value().data(), out, inp);
                let dm = MatMut::from_row_major_slice_mut(&mut dx_buf, B * T, inp);
                faer::linalg::matmul::matmul(dm, Accum::Replace, gm, wm, 1.0, par);
            })
        });
    }
    g.finish();
}

/// faer's sequential kernel over the 32 head products, the heads split across rayon's threads:
/// the yardstick of the batched products and of the fused attention.
fn faer_heads(a: &[f32], b: &[f32], out: &mut [f32], (m, k, n): (usize, usize, usize), tb: bool) {
    out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| {
        let am = MatRef::from_row_major_slice(&a[i * m * k..(i + 1) * m * k], m, k);
        let bm = if tb {
            MatRef::from_row_major_slice(&b[i * n * k..(i + 1) * n * k], n, k).transpose()
        } else {
            MatRef::from_row_major_slice(&b[i * k * n..(i + 1) * k * n], k, n)
        };
        let om = MatMut::from_row_major_slice_mut(o, m, n);
        faer::linalg::matmul::matmul(om, Accum::Replace, am, bm, 1.0, Par::Seq);
    });
}

/// The fused causal attention of the W2 block (`Var::causal_attention` on the packed
/// `[8, 128, 768]` projections, 4 heads of 64). Throughput is the FLOPs of the products it
/// actually computes (blocks of 32 query rows skip the masked upper triangle):
/// `fwd` two products, `vjp` four (`∂A`, `∂V`, `∂K`, `∂Q`).
fn fused_attention(c: &mut Criterion) {
    let mut g = group(c, "w2_fused_attention_f32");
    let mut rng = Rng::new(6);
    let qkv = Tensor::<f32>::randn(&[B, T, 3 * D], 1.0, &mut rng);
    let cot = Tensor::<f32>::randn(&[B, T, D], 1.0, &mut rng);
    let scale = 1.0 / (DH as f64).sqrt();
    // Keys seen by each block of 32 queries: 32, 64, 96, 128.
    let seen: usize = (1..=T / 32).map(|j| 32 * 32 * j).sum();
    let product = (2 * B * H * seen * DH) as u64;
    let qc = Var::constant(qkv.clone());
    g.throughput(Throughput::Elements(2 * product));
    g.bench_function("fwd", |bench| {
        bench.iter(|| no_grad(|| black_box(qc.causal_attention(None, None, H, scale))))
    });
    let tape = Tape::new();
    let qv = tape.leaf(qkv);
    let y = qv.causal_attention(None, None, H, scale);
    g.throughput(Throughput::Elements(4 * product));
    g.bench_function("vjp", |bench| {
        bench.iter(|| replay(&tape, &y, &cot, &[&qv]))
    });
    g.finish();
}

/// Log-softmax over W3's `[1024, 10000]` logits: the row kernel at the vocabulary width.
fn log_softmax(c: &mut Criterion) {
    let mut g = group(c, "w3_log_softmax_f32");
    let mut rng = Rng::new(7);
    let x = Tensor::<f32>::randn(&[B * T, VOCAB], 1.0, &mut rng);
    let cot = Tensor::<f32>::randn(&[B * T, VOCAB], 1.0, &mut rng);
    g.throughput(Throughput::Elements((B * T * VOCAB) as u64));
    let xc = Var::constant(x.clone());
    g.bench_function("fwd", |bench| {
        bench.iter(|| no_grad(|| black_box(xc.log_softmax())))
    });
    let tape = Tape::new();
    let xv = tape.leaf(x);
    let y = xv.log_softmax();
    g.bench_function("vjp", |bench| {
        bench.iter(|| replay(&tape, &y, &cot, &[&xv]))
    });
    g.finish();
}

/// The two batched products of attention, 32 = 8 × 4 heads: scores `Q·Kᵀ`
/// (`[8, 4, 128, 64] · [8, 4, 128, 64]ᵀ`, `K` read transposed in place) and the weighted
/// values `A·V` (`[8, 4, 128, 128] · [8, 4, 128, 64]`). Both operands depend on `z`, so the
/// VJP always takes both.
fn attention(c: &mut Criterion) {
    let mut g = group(c, "w2_attention_matmul_f32");
    let mut rng = Rng::new(2);
    let q = Tensor::<f32>::randn(&[B, H, T, DH], 1.0, &mut rng);
    let k = Tensor::<f32>::randn(&[B, H, T, DH], 1.0, &mut rng);
    let a = Tensor::<f32>::randn(&[B, H, T, T], 1.0, &mut rng);
    let v = Tensor::<f32>::randn(&[B, H, T, DH], 1.0, &mut rng);
    let flop = (2 * B * H * T * T * DH) as u64;
    let cases = [
        ("scores_qkT", &q, &k, true, [B, H, T, T]),
        ("values_av", &a, &v, false, [B, H, T, DH]),
    ];
    for (name, l, r, tb, out_shape) in cases {
        let (lc, rc) = (Var::constant(l.clone()), Var::constant(r.clone()));
        g.throughput(Throughput::Elements(flop));
        g.bench_function(format!("{name}/fwd"), |bench| {
            bench.iter(|| no_grad(|| black_box(lc.matmul_t(&rc, false, tb))))
        });
        let tape = Tape::new();
        let (lv, rv) = (tape.leaf(l.clone()), tape.leaf(r.clone()));
        let y = lv.matmul_t(&rv, false, tb);
        let cot = Tensor::<f32>::randn(&out_shape, 1.0, &mut rng);
        g.throughput(Throughput::Elements(2 * flop));
        g.bench_function(format!("{name}/vjp"), |bench| {
            bench.iter(|| replay(&tape, &y, &cot, &[&lv, &rv]))
        });
        let dims = (T, l.shape()[3], out_shape[3]);
        let mut buf = vec![0.0f32; B * H * T * out_shape[3]];
        g.throughput(Throughput::Elements(flop));
        g.bench_function(format!("{name}/faer_fwd"), |bench| {
            bench.iter(|| faer_heads(l.data(), r.data(), &mut buf, dims, tb))
        });
    }
    g.finish();
}

/// Causal softmax over attention scores `[8, 4, 128, 128]` (the `1/8` scaling before is not
/// included): `fwd`/`vjp` the fused `masked_softmax`; `fwd_composed`/`vjp_composed`
/// `masked_fill(−∞)` then `softmax`, two ops; `fwd_softmax_only` without the mask.
fn masked_softmax(c: &mut Criterion) {
    let mut g = group(c, "w2_causal_softmax_f32");
    let mut rng = Rng::new(3);
    let s = Tensor::<f32>::randn(&[B, H, T, T], 1.0, &mut rng);
    let cot = Tensor::<f32>::randn(&[B, H, T, T], 1.0, &mut rng);
    let mask = Mask::causal(T);
    g.throughput(Throughput::Elements((B * H * T * T) as u64));
    let sc = Var::constant(s.clone());
    g.bench_function("fwd", |bench| {
        bench.iter(|| no_grad(|| black_box(sc.masked_softmax(&mask))))
    });
    g.bench_function("fwd_composed", |bench| {
        bench.iter(|| no_grad(|| black_box(sc.masked_fill(&mask, f64::NEG_INFINITY).softmax())))
    });
    g.bench_function("fwd_softmax_only", |bench| {
        bench.iter(|| no_grad(|| black_box(sc.softmax())))
    });
    let tape = Tape::new();
    let sv = tape.leaf(s);
    let fused = sv.masked_softmax(&mask);
    g.bench_function("vjp", |bench| {
        bench.iter(|| replay(&tape, &fused, &cot, &[&sv]))
    });
    let composed = sv.masked_fill(&mask, f64::NEG_INFINITY).softmax();
    g.bench_function("vjp_composed", |bench| {
        bench.iter(|| replay(&tape, &composed, &cot, &[&sv]))
    });
    g.finish();
}

/// The block's affine layer norm over `[8, 128, 256]` (eps 1e-5).
fn layer_norm(c: &mut Criterion) {
    let mut g = group(c, "w2_layer_norm_f32");
    let mut rng = Rng::new(4);
    let x = Tensor::<f32>::randn(&[B, T, D], 1.0, &mut rng);
    let gamma = Tensor::<f32>::rand_uniform(&[D], 0.5, 1.5, &mut rng);
    let beta = Tensor::<f32>::randn(&[D], 0.1, &mut rng);
    let cot = Tensor::<f32>::randn(&[B, T, D], 1.0, &mut rng);
    g.throughput(Throughput::Elements((B * T * D) as u64));
    let (xc, gc, bc) = (
        Var::constant(x.clone()),
        Var::constant(gamma.clone()),
        Var::constant(beta.clone()),
    );
    g.bench_function("fwd", |bench| {
        bench.iter(|| no_grad(|| black_box(xc.layer_norm_affine(&gc, &bc, 1e-5))))
    });
    let tape = Tape::new();
    let (xv, gv, bv) = (tape.leaf(x), tape.leaf(gamma), tape.leaf(beta));
    let y = xv.layer_norm_affine(&gv, &bv, 1e-5);
    g.bench_function("vjp_x", |bench| {
        bench.iter(|| replay(&tape, &y, &cot, &[&xv]))
    });
    g.bench_function("vjp_full", |bench| {
        bench.iter(|| replay(&tape, &y, &cot, &[&xv, &gv, &bv]))
    });
    g.finish();
}

/// W3's fused mean cross-entropy over `[1024, 10000]` logits, Zipf-distributed targets as W3's
/// synthetic tokens.
fn cross_entropy(c: &mut Criterion) {
    let mut g = group(c, "w3_cross_entropy_f32");
    // Tens of milliseconds a call: one call per sample.
    g.sampling_mode(SamplingMode::Flat);
    let mut rng = Rng::new(5);
    let logits = Tensor::<f32>::randn(&[B * T, VOCAB], 1.0, &mut rng);
    // p(i) ∝ 1/(i+1) by inversion of the cumulative sums.
    let cdf: Vec<f64> = (0..VOCAB)
        .scan(0.0, |s, i| {
            *s += 1.0 / (i + 1) as f64;
            Some(*s)
        })
        .collect();
    let total = cdf[VOCAB - 1];
    let targets: Vec<usize> = (0..B * T)
        .map(|_| {
            let u = rng.uniform() * total;
            cdf.partition_point(|&c| c < u).min(VOCAB - 1)
        })
        .collect();
    g.throughput(Throughput::Elements((B * T * VOCAB) as u64));
    let lc = Var::constant(logits.clone());
    g.bench_function("fwd", |bench| {
        bench.iter(|| no_grad(|| black_box(lc.cross_entropy(&targets))))
    });
    let one = Tensor::scalar(1.0f32);
    g.bench_function("fwd_vjp", |bench| {
        bench.iter(|| {
            let tape = Tape::new();
            let lv = tape.leaf(logits.clone());
            let loss = lv.cross_entropy(&targets);
            replay(&tape, &loss, &one, &[&lv]);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    linears,
    attention,
    fused_attention,
    masked_softmax,
    layer_norm,
    log_softmax,
    cross_entropy
);
criterion_main!(benches);
