//! Phantom gradients with `k > 1` recorded steps and damping `τ < 1` against the same steps
//! unrolled by hand (f64): the forward of `z ← τ·f(z) + (1 − τ)·z` from the detached `z*` and
//! its backward, written out with plain loops for the tanh cell.

mod cells;

use cells::{tanh_cell, tanh_params};
use deq_autograd::{no_grad, Rng, Tape, Tensor, Var};
use deq_solvers::{deq, solve, BackwardMode, DeqConfig, SolverConfig, SolverKind, StopMode};

/// Sizes: batch, hidden, input.
const B: usize = 3;
const H: usize = 5;
const I: usize = 4;

fn config(k: usize, tau: f64) -> DeqConfig {
    let s = SolverConfig::new(
        SolverKind::Broyden { memory: 30 },
        100,
        1e-10,
        StopMode::Abs,
    )
    .unwrap();
    DeqConfig::new(s.clone(), s, BackwardMode::Phantom { k, tau }).unwrap()
}

/// The values and the gradients `[∂x, ∂W, ∂U, ∂b]` of `⟨u, z_k⟩` by hand, for
/// `z_{s+1} = τ·tanh(z_s Wᵀ + x Uᵀ + b) + (1 − τ)·z_s` from the constant `z_0 = z*`.
fn by_hand(
    z_star: &[f64],
    x: &[f64],
    p: &[Tensor<f64>],
    u: &[f64],
    k: usize,
    tau: f64,
) -> (Vec<f64>, [Vec<f64>; 4]) {
    let (w, uu, bias) = (p[0].data(), p[1].data(), p[2].data());
    // Forward: keep every z_s and y_s = tanh(a_s).
    let mut zs = vec![z_star.to_vec()];
    let mut ys = Vec::new();
    for _ in 0..k {
        let z = zs.last().unwrap();
        let mut y = vec![0.0; B * H];
        let mut next = vec![0.0; B * H];
        for r in 0..B {
            for j in 0..H {
                let mut a = bias[j];
                for c in 0..H {
                    a += z[r * H + c] * w[j * H + c];
                }
                for c in 0..I {
                    a += x[r * I + c] * uu[j * I + c];
                }
                y[r * H + j] = a.tanh();
                next[r * H + j] = tau * y[r * H + j] + (1.0 - tau) * z[r * H + j];
            }
        }
        ys.push(y);
        zs.push(next);
    }
    // Backward: g = ∂L/∂z_{s+1}; δ = τ·g ⊙ (1 − y_s²); ∂z_s = δ W + (1 − τ)·g.
    let (mut dx, mut dw, mut du, mut db) = (
        vec![0.0; B * I],
        vec![0.0; H * H],
        vec![0.0; H * I],
        vec![0.0; H],
    );
    let mut g = u.to_vec();
    for s in (0..k).rev() {
        let (z, y) = (&zs[s], &ys[s]);
        let delta: Vec<f64> = (0..B * H)
            .map(|e| tau * g[e] * (1.0 - y[e] * y[e]))
            .collect();
        let mut dz = [0.0; B * H];
        for r in 0..B {
            for j in 0..H {
                let d = delta[r * H + j];
                db[j] += d;
                for c in 0..H {
                    dw[j * H + c] += d * z[r * H + c];
                    dz[r * H + c] += d * w[j * H + c];
                }
                for c in 0..I {
                    du[j * I + c] += d * x[r * I + c];
                    dx[r * I + c] += d * uu[j * I + c];
                }
            }
        }
        for e in 0..B * H {
            g[e] = dz[e] + (1.0 - tau) * g[e];
        }
    }
    (zs.pop().unwrap(), [dx, dw, du, db])
}

/// Largest `|a − b|` over the largest `|b|`.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()))
        / scale
}

#[test]
fn phantom_gradient_with_k_steps_and_damping_equals_the_steps_unrolled_by_hand() {
    let mut rng = Rng::new(23);
    let params = tanh_params::<f64>(H, I, 0.7, &mut rng);
    let x = Tensor::<f64>::randn(&[B, I], 1.0, &mut rng);
    let u = Tensor::<f64>::randn(&[B, H], 1.0, &mut rng);
    let z0 = Tensor::zeros(&[B, H]);
    for (k, tau) in [(3, 0.6), (5, 0.35), (2, 1.0)] {
        let cfg = config(k, tau);
        // Through the layer.
        let tape = Tape::new();
        let xv = tape.leaf(x.clone());
        let pv: Vec<Var<f64>> = params.iter().map(|p| tape.leaf(p.clone())).collect();
        let out = deq(&tanh_cell, &xv, &pv, &z0, &cfg);
        let mut wrt = vec![&xv];
        wrt.extend(pv.iter());
        let got = tape.vjp(&[&out.z], &[&u], &wrt);
        // By hand, from the same forward solve.
        let consts: Vec<Var<f64>> = params.iter().cloned().map(Var::constant).collect();
        let xc = Var::constant(x.clone());
        let (z_star, _) = no_grad(|| {
            solve(
                &cfg.forward,
                |z: &Tensor<f64>| tanh_cell(&Var::constant(z.clone()), &xc, &consts).into_value(),
                &z0,
            )
        });
        let (z_k, want) = by_hand(z_star.data(), x.data(), &params, u.data(), k, tau);
        let value_err = rel(out.z.value().data(), &z_k);
        assert!(
            value_err < 1e-13,
            "k {k}, τ {tau}: value differs by {value_err:e}"
        );
        for (name, (g, w)) in ["x", "W", "U", "b"].iter().zip(got.iter().zip(&want)) {
            let e = rel(g.data(), w);
            assert!(e < 1e-12, "k {k}, τ {tau}: ∂{name} differs by {e:e}");
        }
        // k and τ matter: the same steps with k − 1 steps or τ = 1 give other gradients.
        for (k2, tau2) in [(k - 1, tau), (k, 1.0)] {
            if (k2, tau2) != (k, tau) && k2 >= 1 {
                let (_, other) = by_hand(z_star.data(), x.data(), &params, u.data(), k2, tau2);
                let d = (0..4).map(|i| rel(&other[i], &want[i])).fold(0.0, f64::max);
                assert!(d > 1e-3, "k {k2}, τ {tau2} is not told apart: {d:e}");
            }
        }
    }
}
