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
