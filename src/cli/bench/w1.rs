//! W1 "mlp": `z = tanh(z·Wᵀ + x·Uᵀ + b)`, batch 64, hidden 256, input 256, ‖W‖₂ = 0.9, each
//! solver to relative tolerance 1e-5 (or 50 iterations) forward and backward, `L = Σ z*²`.

use super::timing::{measure, median};
use super::{on_device, one, zeros};
use deq_autograd::{matmul_tensor, Rng, Tape, Tensor, Var};
use deq_solvers::{deq, BackwardMode, DeqConfig, RowWise, SolverConfig, SolverKind, StopMode};
use serde_json::{json, Value};

/// `f(z) = tanh(z·Wᵀ + inj)`; the injection `inj = x·Uᵀ + b` is computed once per forward
/// pass, outside the solve (as BENCH.md specifies). Its samples do not interact, so the
/// forward solve applies it to the active samples only ([`RowWise`]).
fn cell(z: &Var<f32>, inj: &Var<f32>, p: &[Var<f32>]) -> Var<f32> {
    z.linear(&p[0], None).add(inj).tanh()
}

fn spectral_norm(w: &Tensor<f32>) -> f64 {
    let n = w.shape()[0];
    let mut v = Tensor::<f32>::ones(&[n, 1]);
    let mut sigma = 0.0;
    for _ in 0..100 {
        let wtwv = matmul_tensor(w, &matmul_tensor(w, &v, false, false), true, false);
        let norm = wtwv.norm();
        sigma = norm.sqrt();
        v = wtwv.map(|a| a / norm as f32);
    }
    sigma
}

fn on_cpu(t: Tensor<f32>) -> Tensor<f32> {
    t.to_device(deq_autograd::Device::Cpu).expect("cpu")
}

struct Run {
    fwd_ms: f64,
    bwd_ms: f64,
    fwd_evals: usize,
    /// Sample rows the forward solve evaluated, over `batch × fwd_evals`.
    fwd_rows: f64,
    bwd_evals: usize,
    fwd_resid: f64,
    bwd_resid: f64,
    grad_w: Tensor<f32>,
    gflop: f64,
    trace: Vec<f64>,
}

fn run(params: &[Tensor<f32>], x: &Tensor<f32>, cfg: &DeqConfig) -> Run {
    let tape = Tape::new();
    let xv = Var::constant(on_device(x.clone()));
    let pv: Vec<Var<f32>> = params
        .iter()
        .map(|p| tape.leaf(on_device(p.clone())))
        .collect();
    let ((out, loss), fwd_ms, f1) = measure(|| {
        let inj = xv.linear(&pv[1], Some(&pv[2]));
        let out = deq(&RowWise(cell), &inj, &pv[..1], &zeros(&[64, 256]), cfg);
        let loss = out.z.mul(&out.z).sum_all();
        (out, loss)
    });
    let (g, bwd_ms, f2) = measure(|| tape.vjp(&[&loss], &[&one()], &[&pv[0]]));
    let fwd = out.stats.forward.clone();
    let bwd = out.stats.backward();
    Run {
        fwd_ms,
        bwd_ms,
        fwd_evals: fwd.as_ref().map_or(0, |s| s.f_evals),
        fwd_rows: fwd.as_ref().map_or(1.0, |s| {
            s.f_rows as f64 / (s.f_evals * s.sample_iterations.len()).max(1) as f64
        }),
        bwd_evals: bwd.as_ref().map_or(0, |s| s.f_evals),
        fwd_resid: fwd.as_ref().map_or(0.0, |s| s.max_rel()),
        bwd_resid: bwd.as_ref().map_or(0.0, |s| s.max_rel()),
        grad_w: on_cpu(g.into_iter().next().expect("one gradient")),
        gflop: f1 + f2,
        trace: fwd
            .and_then(|s| s.rel_trace.first().cloned())
            .unwrap_or_default(),
    }
}

/// Runs W1 and prints its table; returns the figures as JSON.
pub fn bench(reps: usize, sgemm: f64) -> Value {
    let mut rng = Rng::new(0);
    let w0 = Tensor::<f32>::randn(&[256, 256], 1.0, &mut rng);
    let norm = spectral_norm(&w0);
    let w = w0.map(|v| (0.9 * v as f64 / norm) as f32);
    let u = Tensor::<f32>::randn(&[256, 256], 1.0 / 16.0, &mut rng);
    let b = Tensor::<f32>::randn(&[256], 0.1, &mut rng);
    let x = Tensor::<f32>::randn(&[64, 256], 1.0, &mut rng);
    let params = vec![w, u, b];
    let unrolled = {
        let s = SolverConfig::naive();
        DeqConfig::new(s.clone(), s, BackwardMode::Unrolled { k: 300 }).expect("valid")
    };
    let reference = run(&params, &x, &unrolled).grad_w;
    println!("W1 mlp: tanh cell, batch 64, hidden 256, f32, rel tol 1e-5");
    println!(
        "{:<9} {:>8} {:>8} {:>7} {:>6} {:>7} {:>10} {:>10} {:>9} {:>10}",
        "solver",
        "fwd ms",
        "bwd ms",
        "f-evals",
        "f-rows",
        "b-evals",
        "fwd resid",
        "bwd resid",
        "GFLOP/s",
        "∂W relerr"
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
    let mut rows = Vec::new();
    for (name, kind) in kinds {
        let s = SolverConfig::new(kind, 50, 1e-5, StopMode::Rel).expect("valid");
        let cfg = DeqConfig::new(s.clone(), s, BackwardMode::Implicit).expect("valid");
        run(&params, &x, &cfg);
        let runs: Vec<Run> = (0..reps).map(|_| run(&params, &x, &cfg)).collect();
        let mut fwd: Vec<f64> = runs.iter().map(|r| r.fwd_ms).collect();
        let mut bwd: Vec<f64> = runs.iter().map(|r| r.bwd_ms).collect();
        let (fwd, bwd) = (median(&mut fwd), median(&mut bwd));
        let last = runs.last().expect("reps ≥ 1");
        let diff: f64 = last
            .grad_w
            .data()
            .iter()
            .zip(reference.data())
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let relerr = diff / reference.norm();
        let gflops = last.gflop / ((fwd + bwd) / 1e3);
        println!(
            "{name:<9} {fwd:>8.3} {bwd:>8.3} {:>7} {:>6.2} {:>7} {:>10.2e} {:>10.2e} {gflops:>9.1} {relerr:>10.2e}",
            last.fwd_evals, last.fwd_rows, last.bwd_evals, last.fwd_resid, last.bwd_resid
        );
        rows.push(json!({"solver": name, "fwd_ms": fwd, "bwd_ms": bwd, "fwd_evals": last.fwd_evals, "fwd_rows_fraction": last.fwd_rows,
            "bwd_evals": last.bwd_evals, "fwd_resid": last.fwd_resid, "bwd_resid": last.bwd_resid,
            "gflops": gflops, "sgemm_fraction": gflops / sgemm, "grad_rel_err": relerr, "fwd_trace": last.trace}));
    }
    json!({"workload": "w1", "rows": rows})
}
