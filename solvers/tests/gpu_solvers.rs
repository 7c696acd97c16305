//! The solvers and the implicit layer on `cuda:0` against the same computation on the CPU:
//! a tanh cell `f(z) = tanh(z Wᵀ + x)` with ‖W‖₂ = 0.9, in f64, for every method. The
//! fixed points, the iteration counts and the implicit gradients must agree. Skips (saying
//! why) without a GPU.

use deq_autograd::{Device, Rng, Tape, Tensor, Var};
use deq_solvers::{
    deq, solve, BackwardMode, DeqConfig, ImplicitCell, SolverConfig, SolverKind, StopMode,
};

struct TanhCell;

impl ImplicitCell<f64> for TanhCell {
    fn apply(&self, z: &Var<f64>, x: &Var<f64>, params: &[Var<f64>]) -> Var<f64> {
        z.matmul_t(&params[0], false, true).add(x).tanh()
    }
}

fn gpu() -> Option<Device> {
    let dev = Device::Cuda(0);
    match dev.open() {
        Ok(()) => Some(dev),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn problem() -> (Tensor<f64>, Tensor<f64>) {
    let mut rng = Rng::new(7);
    let (b, d) = (6, 48);
    let w0 = Tensor::<f64>::randn(&[d, d], 1.0, &mut rng);
    // Scale to spectral norm 0.9 by power iteration on the host.
    let mut v = vec![1.0; d];
    for _ in 0..200 {
        let wv: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| w0.data()[i * d + j] * v[j]).sum())
            .collect();
        let wtwv: Vec<f64> = (0..d)
            .map(|j| (0..d).map(|i| w0.data()[i * d + j] * wv[i]).sum())
            .collect();
        let n = wtwv.iter().map(|a| a * a).sum::<f64>().sqrt();
        v = wtwv.iter().map(|a| a / n).collect();
    }
    let wv: Vec<f64> = (0..d)
        .map(|i| (0..d).map(|j| w0.data()[i * d + j] * v[j]).sum())
        .collect();
    let sigma = wv.iter().map(|a| a * a).sum::<f64>().sqrt();
    let w = w0.map(|a| 0.9 * a / sigma);
    let x = Tensor::<f64>::randn(&[b, d], 1.0, &mut rng);
    (w, x)
}

fn kinds() -> Vec<(&'static str, SolverKind)> {
    vec![
        ("naive", SolverKind::Naive { tau: 1.0 }),
        (
            "anderson",
            SolverKind::Anderson {
                m: 5,
                lam: 1e-8,
                beta: 1.0,
            },
        ),
        ("broyden", SolverKind::Broyden { memory: 30 }),
    ]
}

fn config(kind: SolverKind) -> SolverConfig {
    SolverConfig::new(kind, 200, 1e-10, StopMode::Rel).expect("valid config")
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn every_solver_finds_the_same_fixed_point_on_the_gpu() {
    let Some(dev) = gpu() else { return };
    let (w, x) = problem();
    let mut failures = Vec::new();
    for (name, kind) in kinds() {
        let cfg = config(kind);
        let run = |device: Device| {
            let (w, x) = (w.to_device(device).unwrap(), x.to_device(device).unwrap());
            let (wv, xv) = (Var::constant(w), Var::constant(x.clone()));
            let f = |z: &Tensor<f64>| {
                TanhCell
                    .apply(&Var::constant(z.clone()), &xv, std::slice::from_ref(&wv))
                    .into_value()
            };
            let z0 = Tensor::zeros_on(x.shape(), device);
            let (z, stats) = solve(&cfg, f, &z0);
            (z.to_vec(), stats)
        };
        let (zc, sc) = run(Device::Cpu);
        let (zg, sg) = run(dev);
        let err = max_rel(&zg, &zc);
        if err > 1e-9 {
            failures.push(format!("{name}: fixed points differ by {err:.2e}"));
        }
        if sc.sample_iterations != sg.sample_iterations {
            failures.push(format!(
                "{name}: iterations cpu {:?} gpu {:?}",
                sc.sample_iterations, sg.sample_iterations
            ));
        }
        if !sg.converged.iter().all(|&c| c) {
            failures.push(format!("{name}: gpu did not converge: {:?}", sg.lowest_rel));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn implicit_gradients_match_on_the_gpu() {
    let Some(dev) = gpu() else { return };
    let (w, x) = problem();
    let mut failures = Vec::new();
    for (name, kind) in kinds() {
        let cfg = DeqConfig::new(config(kind.clone()), config(kind), BackwardMode::Implicit)
            .expect("valid config");
        let run = |device: Device| {
            let tape = Tape::new();
            let wv = tape.leaf(w.to_device(device).unwrap());
            let xv = tape.leaf(x.to_device(device).unwrap());
            let z0 = Tensor::zeros_on(x.shape(), device);
            let out = deq(&TanhCell, &xv, std::slice::from_ref(&wv), &z0, &cfg);
            let loss = out.z.mul(&out.z).sum_all();
            let one = Tensor::<f64>::ones(&[]).to_device(device).unwrap();
            let g = tape.vjp(&[&loss], &[&one], &[&wv, &xv]);
            (g[0].to_vec(), g[1].to_vec())
        };
        let (gw_c, gx_c) = run(Device::Cpu);
        let (gw_g, gx_g) = run(dev);
        for (what, a, b) in [("dW", &gw_g, &gw_c), ("dx", &gx_g, &gx_c)] {
            let err = max_rel(a, b);
            if err > 1e-8 {
                failures.push(format!("{name}: {what} differs by {err:.2e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// How sample 0 misbehaves while the others follow the tanh cell.
#[derive(Clone, Copy, PartialEq)]
enum Bad {
    /// Every sample is well behaved.
    None,
    /// `z ↦ 10z + 1`: naive iteration grows until the protective stop trips.
    Explodes,
    /// `z ↦ 1/(z − z)`: the first residual is infinite (non-finite stop, restore of `z0`).
    Infinite,
}

struct Cell(Bad);

impl ImplicitCell<f64> for Cell {
    fn apply(&self, z: &Var<f64>, x: &Var<f64>, params: &[Var<f64>]) -> Var<f64> {
        let b = z.dim(0);
        let good = TanhCell.apply(&z.narrow(0, 1, b - 1), &x.narrow(0, 1, b - 1), params);
        let z0 = z.narrow(0, 0, 1);
        let first = match self.0 {
            Bad::None => TanhCell.apply(&z0, &x.narrow(0, 0, 1), params),
            Bad::Explodes => z0.mul_scalar(10.0).add_scalar(1.0),
            Bad::Infinite => z0.sub(&z0).powi(-1),
        };
        Var::concat(&[&first, &good], 0)
    }
}

/// Every statistic of a solve, CPU against GPU: traces to 1e-9 relative, counters exactly.
fn compare_stats(
    name: &str,
    c: &deq_solvers::SolveStats,
    g: &deq_solvers::SolveStats,
    failures: &mut Vec<String>,
) {
    let same = |what: &str, a: String, b: String, failures: &mut Vec<String>| {
        if a != b {
            failures.push(format!("{name}: {what} cpu {a} gpu {b}"));
        }
    };
    same(
        "iterations",
        format!("{}", c.iterations),
        format!("{}", g.iterations),
        failures,
    );
    same(
        "f_evals",
        format!("{}", c.f_evals),
        format!("{}", g.f_evals),
        failures,
    );
    same(
        "sample_iterations",
        format!("{:?}", c.sample_iterations),
        format!("{:?}", g.sample_iterations),
        failures,
    );
    same(
        "converged",
        format!("{:?}", c.converged),
        format!("{:?}", g.converged),
        failures,
    );
    same(
        "diverged",
        format!("{:?}", c.diverged),
        format!("{:?}", g.diverged),
        failures,
    );
    same(
        "fallback_steps",
        format!("{}", c.fallback_steps),
        format!("{}", g.fallback_steps),
        failures,
    );
    same(
        "lowrank",
        format!("{} {}", c.lowrank_capacity, c.lowrank_pairs_max),
        format!("{} {}", g.lowrank_capacity, g.lowrank_pairs_max),
        failures,
    );
    for (s, (tc, tg)) in c.abs_trace.iter().zip(&g.abs_trace).enumerate() {
        if tc.len() != tg.len() {
            failures.push(format!(
                "{name}: sample {s} trace lengths {} vs {}",
                tc.len(),
                tg.len()
            ));
            continue;
        }
        for (a, b) in tc.iter().zip(tg) {
            let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(1e-30);
            if !ok {
                failures.push(format!("{name}: sample {s} residual {a:e} vs {b:e}"));
                break;
            }
        }
    }
}

#[test]
fn solver_statistics_match_on_the_gpu_in_hard_cases() {
    let (w, x) = problem();
    // The CPU references run everywhere (they check the cases exercise what they claim);
    // the GPU comparison runs where a device is present.
    let dev = gpu();
    let anderson = |m, lam| SolverKind::Anderson { m, lam, beta: 1.0 };
    let cases: Vec<(&str, SolverKind, usize, Bad)> = vec![
        (
            "broyden ring of 3",
            SolverKind::Broyden { memory: 3 },
            40,
            Bad::None,
        ),
        ("anderson m=2", anderson(2, 1e-10), 40, Bad::None),
        (
            "naive damped",
            SolverKind::Naive { tau: 0.7 },
            60,
            Bad::None,
        ),
        (
            "naive, exploding sample",
            SolverKind::Naive { tau: 1.0 },
            30,
            Bad::Explodes,
        ),
        (
            "broyden, infinite sample",
            SolverKind::Broyden { memory: 8 },
            30,
            Bad::Infinite,
        ),
        (
            "anderson, infinite sample",
            anderson(4, 1e-8),
            30,
            Bad::Infinite,
        ),
    ];
    let mut failures = Vec::new();
    for (name, kind, iters, bad) in cases {
        let cfg = SolverConfig::new(kind, iters, 1e-12, StopMode::Rel).expect("valid config");
        let run = |device: Device| {
            let (wv, xv) = (
                Var::constant(w.to_device(device).unwrap()),
                Var::constant(x.to_device(device).unwrap()),
            );
            let f = |z: &Tensor<f64>| {
                let z = Var::constant(z.clone());
                let p = std::slice::from_ref(&wv);
                Cell(bad).apply(&z, &xv, p).into_value()
            };
            let (z, stats) = solve(&cfg, f, &Tensor::zeros_on(x.shape(), device));
            (z.to_vec(), stats)
        };
        let (zc, sc) = run(Device::Cpu);
        if bad != Bad::None && !(sc.diverged[0] && sc.diverged[1..].iter().all(|d| !d)) {
            failures.push(format!("{name}: the CPU reference flags {:?}", sc.diverged));
        }
        if name.starts_with("broyden ring") && sc.lowrank_pairs_max != 3 {
            failures.push(format!(
                "{name}: the ring never filled ({})",
                sc.lowrank_pairs_max
            ));
        }
        let Some(dev) = dev else { continue };
        let (zg, sg) = run(dev);
        let err = max_rel(&zg, &zc);
        if err > 1e-9 {
            failures.push(format!("{name}: iterates differ by {err:.2e}"));
        }
        compare_stats(name, &sc, &sg, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
