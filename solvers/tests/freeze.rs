//! A batch with one much harder sample: per-sample stop, per-sample iteration counts, and
//! frozen easy samples whose returned values are their values at their own convergence.

mod common;

use common::{config, kinds, TanhCell};
use deq_autograd::Tensor;
use deq_solvers::{solve, SolverKind, StopMode};

const B: usize = 6;
const H: usize = 16;

/// `f(z)_b = tanh(s_b · z_b Wᵀ + inj_b)`: sample 0 has `s = 1` (‖W‖₂ = 0.97, slow), the
/// others `s = 0.2` (fast). Every input `f` sees is recorded.
fn run(kind: &SolverKind) {
    let cell = TanhCell::<f64>::new(21, B, H, 0.97);
    let mut inputs: Vec<Vec<f64>> = Vec::new();
    let f = |z: &Tensor<f64>| {
        inputs.push(z.to_vec());
        let mut out = deq_autograd::matmul_tensor(z, &cell.w, false, true);
        for (k, (o, &i)) in out.data_mut().iter_mut().zip(cell.inj.data()).enumerate() {
            let s = if k / H == 0 { 1.0 } else { 0.2 };
            *o = (s * *o + i).tanh();
        }
        out
    };
    let tol = 1e-8;
    let cfg = config(kind.clone(), 1000, tol, StopMode::Rel);
    let (z, stats) = solve(&cfg, f, &Tensor::zeros(&[B, H]));
    assert!(stats.all_converged(), "{kind:?}: {stats:?}");
    assert_eq!(inputs.len(), stats.f_evals);
    let extra = usize::from(matches!(kind, SolverKind::Broyden { .. }));
    let hard = stats.sample_iterations[0];
    assert_eq!(
        hard, stats.iterations,
        "{kind:?}: the hard sample sets the batch length"
    );
    println!(
        "{kind:?}: per-sample iterations {:?}",
        stats.sample_iterations
    );
    for b in 1..B {
        let own = stats.sample_iterations[b];
        assert!(own < hard, "{kind:?}: easy sample {b} took {own} ≥ {hard}");
        let rel = &stats.rel_trace[b];
        assert_eq!(rel.len(), own + extra);
        assert!(rel[rel.len() - 1] < tol);
        assert!(rel[..rel.len() - 1].iter().all(|&r| r >= tol));
        // The f call at which it converged, and every later one, saw the same values...
        let at = own + extra - 1;
        let frozen = &inputs[at][b * H..(b + 1) * H];
        for later in &inputs[at..] {
            assert_eq!(
                &later[b * H..(b + 1) * H],
                frozen,
                "{kind:?}: sample {b} moved after converging"
            );
        }
        // ...and they are what the solve returns.
        assert_eq!(
            &z.data()[b * H..(b + 1) * H],
            frozen,
            "{kind:?}: sample {b}"
        );
    }
}

#[test]
fn naive_freezes_easy_samples() {
    run(&kinds()[0]);
}

#[test]
fn anderson_freezes_easy_samples() {
    run(&kinds()[1]);
}

#[test]
fn broyden_freezes_easy_samples() {
    run(&kinds()[2]);
}
