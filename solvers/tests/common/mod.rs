//! Test problems shared by the integration tests: contractive linear maps with a known answer
//! and the `tanh(W z + U x + b)` cell of the acceptance criteria.

#![allow(dead_code)]

use deq_autograd::{matmul_tensor, Float, Rng, Tensor};
use deq_solvers::{SolverConfig, SolverKind, StopMode};
use faer::linalg::solvers::Solve;
use faer::Mat;

/// Largest singular value of the row-major `n × n` matrix `a`.
pub fn spectral_norm(a: &[f64], n: usize) -> f64 {
    let m = Mat::<f64>::from_fn(n, n, |i, j| a[i * n + j]);
    m.singular_values()
        .expect("SVD converges")
        .into_iter()
        .fold(0.0, f64::max)
}

/// A standard normal `n × n` matrix rescaled to spectral norm `norm` (row-major).
pub fn matrix_with_norm(rng: &mut Rng, n: usize, norm: f64) -> Vec<f64> {
    let a: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
    let s = norm / spectral_norm(&a, n);
    a.into_iter().map(|v| v * s).collect()
}

/// `z = z Aᵀ + c` for a batch of rows: `A` (`n × n`), `c` (`b × n`) and the exact solution
/// `z* = (I − A)⁻¹ c` per row from faer's LU.
pub struct Linear {
    pub a: Tensor<f64>,
    pub c: Tensor<f64>,
    pub exact: Tensor<f64>,
}

impl Linear {
    pub fn new(rng: &mut Rng, b: usize, n: usize, norm: f64) -> Self {
        let a = matrix_with_norm(rng, n, norm);
        let c: Vec<f64> = (0..b * n).map(|_| rng.normal()).collect();
        let lhs = Mat::<f64>::from_fn(n, n, |i, j| f64::from(u8::from(i == j)) - a[i * n + j]);
        let rhs = Mat::<f64>::from_fn(n, b, |i, j| c[j * n + i]);
        let sol = lhs.partial_piv_lu().solve(&rhs);
        let exact = Tensor::from_fn(&[b, n], |k| sol[(k % n, k / n)]);
        Linear {
            a: Tensor::from_vec(a, &[n, n]),
            c: Tensor::from_vec(c, &[b, n]),
            exact,
        }
    }

    /// `f(z) = z Aᵀ + c`.
    pub fn apply(&self, z: &Tensor<f64>) -> Tensor<f64> {
        let mut out = matmul_tensor(z, &self.a, false, true);
        out.data_mut()
            .iter_mut()
            .zip(self.c.data())
            .for_each(|(o, &c)| *o += c);
        out
    }
}

/// `f(z) = tanh(z Wᵀ + inj)`, `inj = x Uᵀ + b` computed once: the acceptance cell.
///
/// `W` is symmetric, rescaled to spectral norm `norm`, so its spectral radius equals its norm:
/// the slow regime where acceleration matters. (A Gaussian `W` has spectral radius about half
/// its spectral norm by the circular law, and naive iteration already contracts at ≈ 0.5.)
/// The injection is small (`U ~ 0.3·N(0, 1)/√h`, `b ~ 0.03·N(0, 1)`, `x ~ N(0, 1)`) so that
/// `tanh` stays near its linear range and does not damp the iteration.
pub struct TanhCell<T: Float> {
    pub w: Tensor<T>,
    pub inj: Tensor<T>,
}

impl<T: Float> TanhCell<T> {
    /// Batch `b`, hidden and input size `h`, `‖W‖₂ = norm`.
    pub fn new(seed: u64, b: usize, h: usize, norm: f64) -> Self {
        let mut rng = Rng::new(seed);
        let a: Vec<f64> = (0..h * h).map(|_| rng.normal()).collect();
        let sym: Vec<f64> = (0..h * h).map(|k| a[k] + a[(k % h) * h + k / h]).collect();
        let s = norm / spectral_norm(&sym, h);
        let w: Vec<f64> = sym.into_iter().map(|v| v * s).collect();
        let u = Tensor::<f64>::randn(&[h, h], 0.3 / (h as f64).sqrt(), &mut rng);
        let x = Tensor::<f64>::randn(&[b, h], 1.0, &mut rng);
        let bias = Tensor::<f64>::randn(&[h], 0.03, &mut rng);
        let mut inj = matmul_tensor(&x, &u, false, true);
        inj.data_mut()
            .iter_mut()
            .enumerate()
            .for_each(|(k, v)| *v += bias.data()[k % h]);
        TanhCell {
            w: Tensor::<f64>::from_vec(w, &[h, h]).cast(),
            inj: inj.cast(),
        }
    }

    pub fn apply(&self, z: &Tensor<T>) -> Tensor<T> {
        let pre = matmul_tensor(z, &self.w, false, true);
        let out = pre
            .data()
            .iter()
            .zip(self.inj.data())
            .map(|(&p, &i)| (p + i).tanh())
            .collect();
        Tensor::from_vec(out, z.shape())
    }
}

/// Per-sample residual `‖f(z) − z‖` in f64.
pub fn abs_residuals<T: Float>(z: &Tensor<T>, fz: &Tensor<T>) -> Vec<f64> {
    let n = z.numel() / z.dim(0);
    z.data()
        .chunks(n)
        .zip(fz.data().chunks(n))
        .map(|(z, f)| {
            z.iter()
                .zip(f)
                .map(|(a, b)| (b.to_f64() - a.to_f64()).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

/// The three methods with acceptance-test settings.
pub fn kinds() -> [SolverKind; 3] {
    [
        SolverKind::Naive { tau: 1.0 },
        SolverKind::Anderson {
            m: 6,
            lam: 1e-4,
            beta: 1.0,
        },
        SolverKind::Broyden { memory: 30 },
    ]
}

/// A validated config.
pub fn config(kind: SolverKind, max_iter: usize, tol: f64, mode: StopMode) -> SolverConfig {
    SolverConfig::new(kind, max_iter, tol, mode).expect("valid config")
}
