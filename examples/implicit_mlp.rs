//! The W1 workload of the benchmarks: a tanh DEQ `z = tanh(z·Wᵀ + x·Uᵀ + b)` (batch 64,
//! hidden 256, input 256, ‖W‖₂ = 0.9) solved with each solver; prints iterations, residuals,
//! timings and the implicit gradient's error against backprop through 300 unrolled steps.
//!
//! Run: `cargo run --release --example implicit_mlp`

use deq_autograd::{matmul_tensor, Rng, Tape, Tensor, Var};
use deq_solvers::{deq, BackwardMode, DeqConfig, SolverConfig, SolverKind, StopMode};
use std::time::Instant;

fn cell(z: &Var<f32>, x: &Var<f32>, p: &[Var<f32>]) -> Var<f32> {
    z.linear(&p[0], None)
        .add(&x.linear(&p[1], Some(&p[2])))
        .tanh()
}

/// Largest singular value by power iteration on `WᵀW`.
fn spectral_norm(w: &Tensor<f32>) -> f64 {
    let n = w.shape()[0];
    let mut v = Tensor::<f32>::ones(&[n, 1]);
    let mut sigma = 0.0;
    for _ in 0..200 {
        let wv = matmul_tensor(w, &v, false, false);
        let wtwv = matmul_tensor(w, &wv, true, false);
        let norm = wtwv.norm();
        sigma = norm.sqrt();
        v = wtwv.map(|a| a / norm as f32);
    }
    sigma
}

/// `∂L/∂W` with `L = Σ z²`, plus forward/backward wall times and the layer's statistics.
fn grad_w(
    params: &[Tensor<f32>],
    x: &Tensor<f32>,
    cfg: &DeqConfig,
) -> (Tensor<f32>, f64, f64, deq_solvers::DeqStats) {
    let tape = Tape::new();
    let xv = Var::constant(x.clone());
    let pv: Vec<Var<f32>> = params.iter().map(|p| tape.leaf(p.clone())).collect();
    let start = Instant::now();
    let out = deq(&cell, &xv, &pv, &Tensor::zeros(&[64, 256]), cfg);
    let loss = out.z.mul(&out.z).sum_all();
    let fwd = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let g = tape
        .vjp(&[&loss], &[&Tensor::scalar(1.0)], &[&pv[0]])
        .remove(0);
    let bwd = start.elapsed().as_secs_f64() * 1e3;
    (g, fwd, bwd, out.stats)
}

fn main() {
    let (batch, hidden, input) = (64, 256, 256);
    let mut rng = Rng::new(0);
    let w0 = Tensor::<f32>::randn(&[hidden, hidden], 1.0, &mut rng);
    let norm = spectral_norm(&w0);
    let w = w0.map(|v| (0.9 * v as f64 / norm) as f32);
    let u = Tensor::<f32>::randn(&[hidden, input], 1.0 / 16.0, &mut rng);
    let b = Tensor::<f32>::randn(&[hidden], 0.1, &mut rng);
    let x = Tensor::<f32>::randn(&[batch, input], 1.0, &mut rng);
    let params = vec![w, u, b];

    let unrolled = {
        let s = SolverConfig::naive();
        DeqConfig::new(s.clone(), s, BackwardMode::Unrolled { k: 300 }).unwrap()
    };
    let (reference, ..) = grad_w(&params, &x, &unrolled);
    let ref_norm = reference.norm();

    println!("W1: z = tanh(z Wᵀ + x Uᵀ + b), batch {batch}, hidden {hidden}, ‖W‖₂ = 0.9, f32");
    println!(
        "{:<9} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>12}",
        "solver", "f-evals", "b-evals", "fwd resid", "bwd resid", "fwd ms", "bwd ms", "∂W rel err"
    );
    let kinds = [
        ("naive", SolverKind::Naive { tau: 1.0 }),
        (
            "anderson",
            SolverKind::Anderson {
                m: 5,
                lam: 1e-4,
                beta: 1.0,
            },
        ),
        ("broyden", SolverKind::Broyden { memory: 50 }),
    ];
    for (name, kind) in kinds {
        let s = SolverConfig::new(kind, 50, 1e-5, StopMode::Rel).unwrap();
        let cfg = DeqConfig::new(s.clone(), s, BackwardMode::Implicit).unwrap();
        grad_w(&params, &x, &cfg); // warm-up
        let (g, fwd_ms, bwd_ms, stats) = grad_w(&params, &x, &cfg);
        let fwd = stats.forward.clone().expect("forward stats");
        let bwd = stats.backward().expect("backward stats");
        let diff = Tensor::from_fn(g.shape(), |i| g.data()[i] - reference.data()[i]);
        println!(
            "{:<9} {:>8} {:>8} {:>10.2e} {:>10.2e} {:>9.2} {:>9.2} {:>12.2e}",
            name,
            fwd.f_evals,
            bwd.f_evals,
            fwd.max_rel(),
            bwd.max_rel(),
            fwd_ms,
            bwd_ms,
            diff.norm() / ref_norm
        );
    }
}
