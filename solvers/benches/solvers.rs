//! Cost of one solver iteration, excluding the f call, on the W1 ([64, 256]) and W2
//! ([8, 32768]) state shapes of `../shared/BENCH.md`, in f32.
//!
//! Method: each measurement runs whole solves of `K = 16` iterations with `early_stop = false`
//! (the W2 iteration count), times each solve, and subtracts the time spent inside `f` (timed
//! around every call). The remainder (residual norms, best-iterate copies, history and
//! low-rank updates, the Anderson bordered solves, and the solver's one-time setup) is divided
//! by `K`, so a reported time is one iteration with the setup amortised over 16. Anderson uses
//! the W1 settings (`m = 5`, `λ = 1e-4`, `β = 1`); Broyden `memory = 30` (holding up to 16
//! pairs here). `f(z) = tanh(0.9·z + x)` elementwise keeps the solvers busy (it is not solved
//! to machine precision in 16 iterations).

use criterion::{criterion_group, criterion_main, Criterion};
use deq_autograd::{Rng, Tensor};
use deq_solvers::{solve, SolverConfig, SolverKind, StopMode};
use std::hint::black_box;
use std::time::{Duration, Instant};

const K: usize = 16;

/// Solver time (total minus time inside `f`) of one `K`-iteration solve.
fn solver_time(cfg: &SolverConfig, x: &Tensor<f32>) -> Duration {
    let mut in_f = Duration::ZERO;
    let f = |z: &Tensor<f32>| {
        let t = Instant::now();
        let out: Vec<f32> = z
            .data()
            .iter()
            .zip(x.data())
            .map(|(&z, &x)| (0.9 * z + x).tanh())
            .collect();
        let out = Tensor::from_vec(out, z.shape());
        in_f += t.elapsed();
        out
    };
    let start = Instant::now();
    let result = solve(cfg, f, &Tensor::zeros(x.shape()));
    let total = start.elapsed();
    black_box(result);
    total.saturating_sub(in_f)
}

fn iteration(c: &mut Criterion) {
    let mut group = c.benchmark_group("solver_iteration_f32");
    group.sample_size(20);
    let kinds = [
        (
            "anderson",
            SolverKind::Anderson {
                m: 5,
                lam: 1e-4,
                beta: 1.0,
            },
        ),
        ("broyden", SolverKind::Broyden { memory: 30 }),
    ];
    for shape in [[64usize, 256], [8, 32768]] {
        let mut rng = Rng::new(1);
        let x = Tensor::<f32>::randn(&shape, 1.0, &mut rng);
        for (name, kind) in &kinds {
            let mut cfg = SolverConfig::new(kind.clone(), K, 1e-6, StopMode::Rel).unwrap();
            cfg.early_stop = false;
            let id = format!("{name}/{}x{}", shape[0], shape[1]);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    // Enough K-iteration solves to cover `iters` iterations.
                    let solves = iters.div_ceil(K as u64).max(1);
                    let total: Duration = (0..solves).map(|_| solver_time(&cfg, &x)).sum();
                    total.mul_f64(iters as f64 / (solves * K as u64) as f64)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, iteration);
criterion_main!(benches);
