//! The solvers and the implicit layer on `cuda:0` against the same computation on the CPU:
//! a tanh cell `f(z) = tanh(z Wᵀ + x)` with ‖W‖₂ = 0.9, in f64, for every method. The fixed
//! points, the implicit gradients and the solve statistics must agree up to rounding. The GPU
//! sums in other orders, its `tanh` is not the CPU's and it fuses multiply-adds, so residuals
//! are compared above a floor tied to each sample's initial residual, and an iteration count
//! may differ by one where the relative residual is within a factor of the tolerance
//! ([`stats_differences`], which a CPU test holds to runs perturbed at the level of rounding
//! and to runs with a real error). Without a GPU the GPU tests skip, saying why (never with
//! `DEQ_REQUIRE_GPU=1`; the rules are `deq_cuda::harness`'s).

// Without the `cuda` feature only the CPU half of the hard cases runs; the rest is unused.
#![cfg_attr(not(feature = "cuda"), allow(dead_code, unused_imports))]

use deq_autograd::{Device, Rng, Tape, Tensor, Var};
use deq_solvers::{
    deq, solve, BackwardMode, DeqConfig, ImplicitCell, SolveStats, SolverConfig, SolverKind,
    StopMode,
};

struct TanhCell;

impl ImplicitCell<f64> for TanhCell {
    fn apply(&self, z: &Var<f64>, x: &Var<f64>, params: &[Var<f64>]) -> Var<f64> {
        z.matmul_t(&params[0], false, true).add(x).tanh()
    }
}

/// `cuda:0`, or `None` after printing why `test` skips (`deq_cuda::harness::test_gpu`).
#[cfg(feature = "cuda")]
fn gpu(test: &str) -> Option<Device> {
    deq_cuda::harness::test_gpu(test).map(|g| Device::Cuda(g.ordinal()))
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

#[cfg(feature = "cuda")]
#[test]
fn every_solver_finds_the_same_fixed_point_on_the_gpu() {
    let Some(dev) = gpu("every_solver_finds_the_same_fixed_point_on_the_gpu") else {
        return;
    };
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
        if let Err(e) = deq_cuda::harness::compare(&zg, &zc, 1e-9) {
            failures.push(format!("{name}: fixed points: {e}"));
        }
        failures.extend(stats_differences(name, cfg.tol, &sc, &sg));
        if !sg.converged.iter().all(|&c| c) {
            failures.push(format!("{name}: gpu did not converge: {:?}", sg.lowest_rel));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[cfg(feature = "cuda")]
#[test]
fn implicit_gradients_match_on_the_gpu() {
    let Some(dev) = gpu("implicit_gradients_match_on_the_gpu") else {
        return;
    };
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
            if let Err(e) = deq_cuda::harness::compare(a, b, 1e-8) {
                failures.push(format!("{name}: {what}: {e}"));
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
    /// `z ↦ 7z + 1`: naive iteration grows until the protective stop trips. From `z = 0` the
    /// k-th residual is exactly `7^k` times the first, never near the stop's factor 1e6
    /// (`7^7 ≈ 0.82e6`, `7^8 ≈ 5.8e6`), so rounding cannot move the stop: with `10z + 1` the
    /// sixth residual is the factor exactly, and the devices' rounding decides.
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
            Bad::Explodes => z0.mul_scalar(7.0).add_scalar(1.0),
            Bad::Infinite => z0.sub(&z0).powi(-1),
        };
        Var::concat(&[&first, &good], 0)
    }
}

/// Residuals above the floor must agree to this relative error.
const RESIDUAL_RTOL: f64 = 1e-6;

/// The floor of residual comparisons, as a fraction of the sample's initial residual: below
/// it a residual is rounding noise of the order of `ε ‖z‖` (about 1e-15 here), and two devices
/// need not agree on it.
const RESIDUAL_FLOOR: f64 = 1e-12;

/// A sample's iteration count may differ by one when its relative residual at the step where
/// the devices part is within this factor of the tolerance on both of them.
const NEAR: f64 = 10.0;

/// Whether the relative residuals of one sample are near `tol` where the shorter trace ends.
fn near_threshold(rel_c: &[f64], rel_g: &[f64], tol: f64) -> bool {
    let k = rel_c.len().min(rel_g.len());
    k > 0
        && [rel_c[k - 1], rel_g[k - 1]]
            .iter()
            .all(|&r| r.is_finite() && r >= tol / NEAR && r <= tol * NEAR)
}

/// Every statistic of two solves of one problem (`c` on the CPU, `g` on the GPU, stop
/// tolerance `tol`), as a list of differences (empty when they agree):
/// - per sample, the diverged flag exactly; the iteration count and the converged flag exactly,
///   or (iterations) within one where [`near_threshold`];
/// - per sample, the absolute residual traces entry by entry with the rules of
///   `deq_cuda::harness::agree` (NaN on one side only or unequal infinities differ) to
///   [`RESIDUAL_RTOL`] above [`RESIDUAL_FLOOR`] × the initial residual, and their lengths
///   exactly unless the count may differ;
/// - the batch counters exactly, or within one when some sample's count may differ.
#[cfg(feature = "cuda")]
fn stats_differences(name: &str, tol: f64, c: &SolveStats, g: &SolveStats) -> Vec<String> {
    use deq_cuda::harness::agree;
    let mut out = Vec::new();
    let b = c.sample_iterations.len();
    if g.sample_iterations.len() != b {
        return vec![format!(
            "{name}: {b} samples on the cpu, {} on the gpu",
            g.sample_iterations.len()
        )];
    }
    let mut some_near = false;
    for s in 0..b {
        let (ic, ig) = (c.sample_iterations[s], g.sample_iterations[s]);
        let near = ic.abs_diff(ig) <= 1 && near_threshold(&c.rel_trace[s], &g.rel_trace[s], tol);
        if ic != ig || c.converged[s] != g.converged[s] {
            if near {
                some_near = true;
            } else {
                out.push(format!(
                    "{name}: sample {s}: iterations (converged) cpu {ic} ({}) gpu {ig} ({}), \
                     last relative residuals {:e} vs {:e}",
                    c.converged[s],
                    g.converged[s],
                    c.rel_trace[s].last().copied().unwrap_or(f64::NAN),
                    g.rel_trace[s].last().copied().unwrap_or(f64::NAN),
                ));
            }
        }
        if c.diverged[s] != g.diverged[s] {
            out.push(format!(
                "{name}: sample {s}: diverged cpu {} gpu {}",
                c.diverged[s], g.diverged[s]
            ));
        }
        let (tc, tg) = (&c.abs_trace[s], &g.abs_trace[s]);
        if tc.len() != tg.len() && !(near && tc.len().abs_diff(tg.len()) == 1) {
            out.push(format!(
                "{name}: sample {s}: trace lengths {} vs {}",
                tc.len(),
                tg.len()
            ));
        }
        let r0 = tc.iter().copied().find(|r| r.is_finite()).unwrap_or(0.0);
        let floor = RESIDUAL_FLOOR * r0;
        if let Some(k) =
            (0..tc.len().min(tg.len())).find(|&k| !agree(tc[k], tg[k], RESIDUAL_RTOL, floor))
        {
            out.push(format!(
                "{name}: sample {s}: residual {k} cpu {:e} gpu {:e} (floor {floor:.1e})",
                tc[k], tg[k]
            ));
        }
    }
    let slack = usize::from(some_near);
    let counters = [
        ("iterations", c.iterations, g.iterations),
        ("f_evals", c.f_evals, g.f_evals),
        ("fallback_steps", c.fallback_steps, g.fallback_steps),
        (
            "lowrank_pairs_max",
            c.lowrank_pairs_max,
            g.lowrank_pairs_max,
        ),
    ];
    for (what, a, b) in counters {
        if a.abs_diff(b) > slack {
            out.push(format!("{name}: {what} cpu {a} gpu {b}"));
        }
    }
    if c.lowrank_capacity != g.lowrank_capacity {
        out.push(format!(
            "{name}: lowrank_capacity cpu {} gpu {}",
            c.lowrank_capacity, g.lowrank_capacity
        ));
    }
    out
}

/// The hard cases: a Broyden ring that wraps, Anderson with a small memory, damped naive
/// iteration, and a first sample that explodes or is infinite from the start; each to
/// `tol = 1e-12`, relative.
fn hard_cases() -> Vec<(&'static str, SolverConfig, Bad)> {
    let anderson = |m, lam| SolverKind::Anderson { m, lam, beta: 1.0 };
    let cases = vec![
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
    cases
        .into_iter()
        .map(|(name, kind, iters, bad)| {
            let cfg = SolverConfig::new(kind, iters, 1e-12, StopMode::Rel).expect("valid config");
            (name, cfg, bad)
        })
        .collect()
}

/// Solves a hard case on `device` from `z0 = 0`. With `noise = (eps, seed)` every value `f`
/// returns is multiplied by `1 + eps·u`, `u` uniform in [-1, 1) and fresh at every call: a
/// stand-in, on the CPU, for a device that rounds differently.
fn run_hard_case(
    device: Device,
    cfg: &SolverConfig,
    bad: Bad,
    noise: Option<(f64, u64)>,
) -> (Vec<f64>, SolveStats) {
    let (w, x) = problem();
    let (wv, xv) = (
        Var::constant(w.to_device(device).unwrap()),
        Var::constant(x.to_device(device).unwrap()),
    );
    let mut rng = Rng::new(noise.map_or(0, |(_, seed)| seed));
    let f = |z: &Tensor<f64>| {
        let z = Var::constant(z.clone());
        let fz = Cell(bad)
            .apply(&z, &xv, std::slice::from_ref(&wv))
            .into_value();
        match noise {
            None => fz,
            Some((eps, _)) => {
                let u = Tensor::<f64>::rand_uniform(fz.shape(), -1.0, 1.0, &mut rng);
                let v = fz.data().iter().zip(u.data());
                Tensor::from_vec(v.map(|(a, u)| a * (1.0 + eps * u)).collect(), fz.shape())
            }
        }
    };
    let (z, stats) = solve(cfg, f, &Tensor::zeros_on(x.shape(), device));
    (z.to_vec(), stats)
}

#[test]
fn solver_statistics_match_on_the_gpu_in_hard_cases() {
    // The CPU references run everywhere (they check the cases exercise what they claim);
    // the GPU comparison runs where a device is present.
    #[cfg(feature = "cuda")]
    let dev = gpu("solver_statistics_match_on_the_gpu_in_hard_cases");
    #[cfg(not(feature = "cuda"))]
    let dev: Option<Device> = None;
    let mut failures = Vec::new();
    for (name, cfg, bad) in hard_cases() {
        let (zc, sc) = run_hard_case(Device::Cpu, &cfg, bad, None);
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
        #[cfg(feature = "cuda")]
        {
            let (zg, sg) = run_hard_case(dev, &cfg, bad, None);
            if let Err(e) = deq_cuda::harness::compare(&zg, &zc, 1e-9) {
                failures.push(format!("{name}: iterates: {e}"));
            }
            failures.extend(stats_differences(name, cfg.tol, &sc, &sg));
        }
        #[cfg(not(feature = "cuda"))]
        let _ = (dev, zc);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The comparison of the GPU tests cannot fail by construction, and still sees real errors:
/// on the CPU, every hard case against itself with each value of `f` perturbed by 64 units in
/// the last place (the error bound of a 48-term dot product summed in another order; another
/// `tanh` or a fused multiply-add does less) agrees for several noise draws; perturbed by 1e-7
/// (an f32-accurate kernel in an f64 solve), the converging cases differ. (The comparison
/// still agrees at 1024 ulps; with the exploding sample's old `10z + 1`, which sits on the
/// protective threshold, it fails at 64.)
#[cfg(feature = "cuda")]
#[test]
fn the_statistics_comparison_tolerates_rounding_but_not_errors() {
    let mut failures = Vec::new();
    for (name, cfg, bad) in hard_cases() {
        let (z, reference) = run_hard_case(Device::Cpu, &cfg, bad, None);
        for seed in 1..=4 {
            let (zn, noisy) =
                run_hard_case(Device::Cpu, &cfg, bad, Some((64.0 * f64::EPSILON, seed)));
            if let Err(e) = deq_cuda::harness::compare(&zn, &z, 1e-9) {
                failures.push(format!("{name} (seed {seed}): iterates: {e}"));
            }
            for d in stats_differences(name, cfg.tol, &reference, &noisy) {
                failures.push(format!("(seed {seed}) {d}"));
            }
        }
        let (_, wrong) = run_hard_case(Device::Cpu, &cfg, bad, Some((1e-7, 1)));
        if bad == Bad::None && stats_differences(name, cfg.tol, &reference, &wrong).is_empty() {
            failures.push(format!("{name}: an error of 1e-7 goes unnoticed"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[cfg(feature = "cuda")]
#[test]
fn near_threshold_needs_both_residuals_close_to_the_tolerance() {
    let tol = 1e-12;
    assert!(near_threshold(
        &[1.0, 0.9e-12],
        &[1.0, 1.1e-12, 0.5e-12],
        tol
    ));
    assert!(!near_threshold(&[1.0, 0.9e-12], &[1.0, 1e-9, 0.5e-12], tol));
    assert!(!near_threshold(&[1.0, 1e-15], &[1.0, 1.1e-12], tol));
    assert!(!near_threshold(&[1.0, f64::NAN], &[1.0, f64::NAN], tol));
    assert!(!near_threshold(&[], &[], tol));
}
