//! `gradcheck`: every input's VJP against central finite differences, in f64.
//!
//! For a function `y = f(x₁, …, x_n)` and a fixed random cotangent `u`, the analytic gradient
//! `∂⟨u, y⟩/∂x_i` comes from one recorded evaluation and [`Tape::vjp`]; the numeric one from
//! `(⟨u, f(x + h·e_j)⟩ - ⟨u, f(x - h·e_j)⟩) / 2h` for every element `j` (truncation error
//! `O(h²)`, round-off `O(ε/h)`: `h = 1e-6` balances them in f64). The report gives, per input,
//! the largest absolute difference and that difference relative to the larger of the two
//! gradients' max-norms, the usual norm-wise relative error.

use crate::rng::Rng;
use crate::tape::Tape;
use crate::tensor::Tensor;
use crate::var::{no_grad, Var};
use std::fmt;

/// Settings for [`gradcheck`].
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step `h`.
    pub step: f64,
    /// An input passes when its relative error is at most this.
    pub tolerance: f64,
    /// An input also passes when its largest absolute error is at most this (default 0, i.e.
    /// off). Use a small floor such as 1e-9 for gradients whose entries are themselves near
    /// the finite-difference round-off, where a relative error means nothing.
    pub abs_tolerance: f64,
    /// Seed of the random cotangent.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            step: 1e-6,
            tolerance: 1e-6,
            abs_tolerance: 0.0,
            seed: 0x5eed,
        }
    }
}

/// The comparison for one input.
#[derive(Clone, Debug)]
pub struct InputReport {
    /// Position of the input in the argument list.
    pub index: usize,
    /// Its shape.
    pub shape: Vec<usize>,
    /// `max_j |analytic_j - numeric_j|`.
    pub max_abs_error: f64,
    /// `max_abs_error / max(‖analytic‖∞, ‖numeric‖∞)` (0 when both gradients are zero).
    pub max_rel_error: f64,
    /// Flat index of the element with the largest absolute error.
    pub worst_element: usize,
    /// `‖numeric‖∞`, to judge the scale.
    pub scale: f64,
    /// `max_rel_error <= tolerance` or `max_abs_error <= abs_tolerance`, and both gradients
    /// finite.
    pub passed: bool,
}

/// The result of [`gradcheck`]: one [`InputReport`] per input.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// Per-input comparisons.
    pub inputs: Vec<InputReport>,
    /// The tolerance used.
    pub tolerance: f64,
}

impl GradcheckReport {
    /// True when every input passed.
    pub fn passed(&self) -> bool {
        self.inputs.iter().all(|r| r.passed)
    }

    /// The largest relative error over all inputs.
    pub fn max_rel_error(&self) -> f64 {
        self.inputs
            .iter()
            .map(|r| r.max_rel_error)
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5}  {:<16} {:>12} {:>12} {:>10}  result (tol {:.1e})",
            "input", "shape", "max abs err", "max rel err", "scale", self.tolerance
        )?;
        for r in &self.inputs {
            writeln!(
                f,
                "{:>5}  {:<16} {:>12.3e} {:>12.3e} {:>10.3e}  {}",
                r.index,
                format!("{:?}", r.shape),
                r.max_abs_error,
                r.max_rel_error,
                r.scale,
                if r.passed {
                    "pass".to_string()
                } else {
                    format!("FAIL (worst element {})", r.worst_element)
                }
            )?;
        }
        Ok(())
    }
}

fn weighted_sum(f: &dyn Fn(&[Var<f64>]) -> Var<f64>, xs: &[Tensor<f64>], u: &Tensor<f64>) -> f64 {
    no_grad(|| {
        let vars: Vec<Var<f64>> = xs.iter().cloned().map(Var::constant).collect();
        f(&vars).value().dot(u)
    })
}

/// Compares the VJP of `f` with respect to every input against central finite differences.
///
/// `f` must be deterministic and written against [`Var`] ops (any custom ops included); it is
/// evaluated once recorded and `2·Σ numel(x_i)` times with recording off.
///
/// ```
/// use deq_autograd::{gradcheck, GradcheckOptions, Tensor};
/// let x = Tensor::from_vec(vec![0.3, -0.2, 0.5], &[3]);
/// let report = gradcheck(|v| v[0].tanh().mul(&v[0]), &[x], &GradcheckOptions::default());
/// assert!(report.passed(), "{report}");
/// ```
pub fn gradcheck(
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    inputs: &[Tensor<f64>],
    opts: &GradcheckOptions,
) -> GradcheckReport {
    let tape = Tape::new();
    let leaves: Vec<Var<f64>> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
    let y = f(&leaves);
    let mut rng = Rng::new(opts.seed);
    let u = Tensor::randn(y.shape(), 1.0, &mut rng);
    let wrt: Vec<&Var<f64>> = leaves.iter().collect();
    let analytic = if y.is_recorded() {
        tape.vjp(&[&y], &[&u], &wrt)
    } else {
        inputs.iter().map(|x| Tensor::zeros(x.shape())).collect()
    };
    let h = opts.step;
    let mut reports = Vec::with_capacity(inputs.len());
    for (i, x) in inputs.iter().enumerate() {
        let mut xs = inputs.to_vec();
        let mut numeric = vec![0.0; x.numel()];
        for (j, slot) in numeric.iter_mut().enumerate() {
            let orig = x.data()[j];
            xs[i].data_mut()[j] = orig + h;
            let plus = weighted_sum(&f, &xs, &u);
            xs[i].data_mut()[j] = orig - h;
            let minus = weighted_sum(&f, &xs, &u);
            xs[i].data_mut()[j] = orig;
            *slot = (plus - minus) / (2.0 * h);
        }
        let a = analytic[i].data();
        let (mut max_abs, mut worst) = (0.0f64, 0);
        let mut finite = true;
        for (j, (&av, &nv)) in a.iter().zip(&numeric).enumerate() {
            finite &= av.is_finite() && nv.is_finite();
            let e = (av - nv).abs();
            if e > max_abs {
                max_abs = e;
                worst = j;
            }
        }
        let scale_n = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let scale_a = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let scale = scale_n.max(scale_a);
        let rel = if scale > 0.0 { max_abs / scale } else { 0.0 };
        reports.push(InputReport {
            index: i,
            shape: x.shape().to_vec(),
            max_abs_error: max_abs,
            max_rel_error: rel,
            worst_element: worst,
            scale: scale_n,
            passed: finite && (rel <= opts.tolerance || max_abs <= opts.abs_tolerance),
        });
    }
    GradcheckReport {
        inputs: reports,
        tolerance: opts.tolerance,
    }
}
