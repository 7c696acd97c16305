//! One W2 DEQ-Transformer block (`../shared/BENCH.md`: `[8, 128, 256]`, 4 heads of 64, causal
//! attention, FFN 1024, affine LayerNorms), f32: the unit costs that a W2 training step
//! repeats.
//!
//! Why: W2's 16 + 16 Broyden iterations are 17 un-recorded `f(z)` calls, one recorded `f(z*)`,
//! 17 replayed VJPs with respect to `z` alone (the adjoint solve) and one VJP into `x` and the
//! parameters. Times here times those counts (plus the solver's own cost, `cargo bench -p
//! deq-solvers`) should add up to `deq bench`'s W2 figures; a gap is overhead outside them.
//! - `f_no_grad`: one `f(z)` with recording off (a forward solver iteration);
//! - `f_recorded`: `z`, `x` and the 12 parameters as leaves of a fresh tape, then `f(z)` recorded;
//! - `vjp_z_replayed`: one VJP of the recorded `f(z)` with respect to `z` alone, replayed on the
//!   cached plan and buffers (`Tape::vjp_with`; weight-gradient products skipped);
//! - `vjp_full_replayed`: the same with respect to `z`, `x` and every parameter.
//!
//! The block is the very source `deq bench` runs (`src/cli/bench/block.rs`, included below), so
//! the two cannot drift apart. Throughput is the matrix-product FLOP count of one call (read
//! from the engine's counters), so criterion's `Gelem/s` reads as GFLOP/s of the whole call.
//!
//! `cargo bench -p deq --bench w2_block` (about 20 s).

#[path = "../src/cli/bench/block.rs"]
mod block;

use block::{block, params, D};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use deq_autograd::{matmul_counters, no_grad, Rng, Tape, Tensor, Var};
use std::hint::black_box;
use std::time::Duration;

/// Matrix-product FLOPs done by one call of `f`.
fn flops<R>(f: impl FnOnce() -> R) -> u64 {
    let before = matmul_counters().1;
    black_box(f());
    matmul_counters().1 - before
}

fn w2_block(c: &mut Criterion) {
    // Weights and injection drawn as `deq bench`'s W2 draws them.
    let mut rng = Rng::new(2);
    let p = params(&mut rng);
    let inj = Tensor::<f32>::rand_uniform(&[D, D], -1.0 / 16.0, 1.0 / 16.0, &mut rng);
    let emb = Tensor::<f32>::randn(&[8, 128, D], 1.0, &mut rng);
    let x = no_grad(|| {
        Var::constant(emb)
            .linear(&Var::constant(inj), None)
            .into_value()
    });
    // A state of the scale the block produces (its output is layer-normalised).
    let z = Tensor::<f32>::randn(&[8, 128, D], 1.0, &mut rng);
    let cot = Tensor::<f32>::randn(&[8, 128, D], 1.0, &mut rng);

    let mut g = c.benchmark_group("w2_block_f32");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let (zc, xc) = (Var::constant(z.clone()), Var::constant(x.clone()));
    let pc: Vec<Var<f32>> = p.iter().map(|t| Var::constant(t.clone())).collect();
    let forward = || no_grad(|| block(&zc, &xc, &pc));
    g.throughput(Throughput::Elements(flops(forward)));
    g.bench_function("f_no_grad", |bench| bench.iter(|| black_box(forward())));

    let record = || {
        let tape = Tape::new();
        let (zv, xv) = (tape.leaf(z.clone()), tape.leaf(x.clone()));
        let pv: Vec<Var<f32>> = p.iter().map(|t| tape.leaf(t.clone())).collect();
        let y = block(&zv, &xv, &pv);
        (tape, zv, xv, pv, y)
    };
    g.bench_function("f_recorded", |bench| bench.iter(|| black_box(record())));

    let (tape, zv, xv, pv, y) = record();
    let replay = |wrt: &[&Var<f32>]| {
        tape.vjp_with(&[&y], &[&cot], wrt, |_, grad| {
            black_box(grad);
        })
    };
    let z_only = [&zv];
    let mut full = vec![&zv, &xv];
    full.extend(pv.iter());

    replay(&z_only); // builds the plan and the buffers
    g.throughput(Throughput::Elements(flops(|| replay(&z_only))));
    g.bench_function("vjp_z_replayed", |bench| bench.iter(|| replay(&z_only)));

    replay(&full);
    g.throughput(Throughput::Elements(flops(|| replay(&full))));
    g.bench_function("vjp_full_replayed", |bench| bench.iter(|| replay(&full)));
    g.finish();
}

criterion_group!(benches, w2_block);
criterion_main!(benches);
