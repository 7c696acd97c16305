//! W2 "transformer": the block of [`super::block`] on `[8, 128, 256]`, DEQ with exactly 16
//! Broyden iterations forward and backward against 16 unrolled applications with backprop;
//! times and peak heap of one training step each.

use super::alloc::peak_during;
use super::block::{block, params, D};
use super::nominal;
use super::timing::{measure, median};
use super::{on_device, one, zeros};
use deq_autograd::{Rng, Tape, Tensor, Var};
use deq_solvers::{deq, BackwardMode, DeqConfig, SolverConfig, SolverKind, StopMode};
use serde_json::{json, Value};

/// Exactly `iters` Broyden iterations both ways (no early stop).
pub fn fixed_broyden(iters: usize, mode: BackwardMode) -> DeqConfig {
    let s = SolverConfig {
        early_stop: false,
        ..SolverConfig::new(
            SolverKind::Broyden { memory: iters },
            iters,
            1e-9,
            StopMode::Rel,
        )
        .expect("valid")
    };
    DeqConfig::new(s.clone(), s, mode).expect("valid")
}

/// One step: `(fwd ms, bwd ms, matmul GFLOP)`.
fn step(
    p: &[Tensor<f32>],
    inj: &Tensor<f32>,
    emb: &Tensor<f32>,
    cfg: &DeqConfig,
) -> (f64, f64, f64) {
    let tape = Tape::new();
    let pv: Vec<Var<f32>> = p.iter().map(|t| tape.leaf(on_device(t.clone()))).collect();
    let (wi, bi) = (tape.leaf(on_device(inj.clone())), tape.leaf(zeros(&[D])));
    let ev = tape.leaf(on_device(emb.clone()));
    let (loss, fwd_ms, f1) = measure(|| {
        let x = ev.linear(&wi, Some(&bi));
        let out = deq(&block, &x, &pv, &zeros(emb.shape()), cfg);
        let n = out.z.numel() as f64;
        out.z.mul(&out.z).sum_all().mul_scalar(1.0 / n)
    });
    let mut wrt: Vec<&Var<f32>> = pv.iter().collect();
    wrt.push(&wi);
    let (_, bwd_ms, f2) = measure(|| tape.vjp(&[&loss], &[&one()], &wrt));
    (fwd_ms, bwd_ms, f1 + f2)
}

/// Runs W2 and prints its table; returns the figures as JSON.
pub fn bench(reps: usize, sgemm: f64) -> Value {
    let mut rng = Rng::new(2);
    let p = params(&mut rng);
    let inj = Tensor::<f32>::rand_uniform(&[D, D], -1.0 / 16.0, 1.0 / 16.0, &mut rng);
    let emb = Tensor::<f32>::randn(&[8, 128, D], 1.0, &mut rng);
    println!(
        "W2 transformer block [8, 128, 256], f32; GFLOP/s from the nominal FLOPs (BENCH.md shapes)"
    );
    println!(
        "{:<14} {:>8} {:>8} {:>9} {:>10} {:>10}",
        "mode", "fwd ms", "bwd ms", "GFLOP/s", "of sgemm", "peak MiB"
    );
    let modes = [
        (
            "DEQ 16+16",
            fixed_broyden(16, BackwardMode::Implicit),
            nominal::w2_deq(16),
        ),
        (
            "unrolled 16",
            fixed_broyden(16, BackwardMode::Unrolled { k: 16 }),
            nominal::w2_unrolled(16),
        ),
    ];
    let mut rows = Vec::new();
    let mut peaks = Vec::new();
    for (name, cfg, nominal_gflop) in &modes {
        step(&p, &inj, &emb, cfg);
        let mut fwd = Vec::new();
        let mut bwd = Vec::new();
        let mut engine_gflop = 0.0;
        let mut mem = 0;
        for _ in 0..reps {
            let ((f, b, g), m) = peak_during(|| step(&p, &inj, &emb, cfg));
            fwd.push(f);
            bwd.push(b);
            engine_gflop = g;
            mem = m;
        }
        let (f, b) = (median(&mut fwd), median(&mut bwd));
        let gflops = nominal_gflop / ((f + b) / 1e3);
        let mib = mem as f64 / (1 << 20) as f64;
        println!(
            "{name:<14} {f:>8.1} {b:>8.1} {gflops:>9.1} {:>10.2} {mib:>10.1}",
            gflops / sgemm
        );
        peaks.push(mem as f64);
        rows.push(
            json!({"mode": name, "fwd_ms": f, "bwd_ms": b, "gflops": gflops,
            "nominal_gflop": nominal_gflop, "engine_gflop": engine_gflop,
            "sgemm_fraction": gflops / sgemm, "peak_bytes": mem}),
        );
    }
    let ratio = peaks[0] / peaks[1];
    println!("peak memory DEQ / unrolled = {ratio:.3}");
    // Memory against depth / iterations.
    let mut curve = Vec::new();
    for depth in [4usize, 8, 16, 32] {
        let (_, deq_mem) = peak_during(|| {
            step(
                &p,
                &inj,
                &emb,
                &fixed_broyden(depth, BackwardMode::Implicit),
            )
        });
        let (_, unr_mem) = peak_during(|| {
            step(
                &p,
                &inj,
                &emb,
                &fixed_broyden(depth, BackwardMode::Unrolled { k: depth }),
            )
        });
        curve.push(json!({"depth": depth, "deq_bytes": deq_mem, "unrolled_bytes": unr_mem}));
        println!(
            "  depth/iterations {depth:>2}: DEQ {:>7.1} MiB, unrolled {:>7.1} MiB",
            deq_mem as f64 / (1 << 20) as f64,
            unr_mem as f64 / (1 << 20) as f64
        );
    }
    json!({"workload": "w2", "rows": rows, "memory_ratio": ratio, "memory_curve": curve})
}
