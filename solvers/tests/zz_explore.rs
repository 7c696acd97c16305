mod common;
use common::*;
use deq_autograd::Tensor;
use deq_solvers::{solve, SolverKind, StopMode};

#[test]
fn explore() {
    for seed in [7, 8, 9] {
        for norm in [0.95, 0.99] {
            let c = TanhCell::<f64>::new(seed, 16, 64, norm);
            assert!((spectral_norm(&c.w.to_vec(), 64) - norm).abs() < 1e-12);
            let mut line = format!("{seed} {norm}:");
            for kind in [
                SolverKind::Naive { tau: 1.0 },
                SolverKind::Anderson {
                    m: 6,
                    lam: 1e-4,
                    beta: 1.0,
                },
                SolverKind::Anderson {
                    m: 6,
                    lam: 1e-10,
                    beta: 1.0,
                },
                SolverKind::Anderson {
                    m: 6,
                    lam: 1e-12,
                    beta: 1.0,
                },
                SolverKind::Anderson {
                    m: 6,
                    lam: 0.0,
                    beta: 1.0,
                },
                SolverKind::Broyden { memory: 30 },
            ] {
                let cfg = config(kind, 5000, 1e-6, StopMode::Rel);
                let (_, st) = solve(
                    &cfg,
                    |z: &Tensor<f64>| c.apply(z),
                    &Tensor::zeros(&[16, 64]),
                );
                line += &format!(
                    " {}{}",
                    st.f_evals,
                    if st.all_converged() { "" } else { "!" }
                );
            }
            println!("{line}");
        }
    }
}
