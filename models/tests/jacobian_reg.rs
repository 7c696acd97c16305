//! The Jacobian regulariser (`deq_solvers::implicit::jacobian_penalty`) inside both cells of
//! this crate: its value against the exact `‖J ε‖²` (f64), its gradient against finite
//! differences (f64), and in f32 at the bounds its documentation states.

use deq_autograd::{gradcheck, no_grad, Float, GradcheckOptions, Rng, Tape, Tensor, Var};
use deq_models::cells::{DeqTransformerCell, TransformerConfig, TrellisConfig, TrellisNetCell};
use deq_models::ParamStore;
use deq_solvers::implicit::jacobian::{F32_GRADIENT_ERROR, F32_PENALTY_ERROR, F64_PENALTY_ERROR};
use deq_solvers::implicit::jacobian_penalty;
use deq_solvers::{deq, BackwardMode, DeqConfig, ImplicitCell, SolverConfig, SolverKind, StopMode};

/// Probes per penalty.
const PROBES: usize = 2;
/// Seed of the probes.
const PROBE_SEED: u64 = 77;

enum Cell {
    Transformer(Box<DeqTransformerCell>),
    Trellis(TrellisNetCell),
}

/// One cell with its parameters, injection, memory (or history) and equilibrium, in f64.
struct Case {
    name: String,
    cell: Cell,
    store: ParamStore<f64>,
    x: Tensor<f64>,
    /// Memory `[B, M, d]` (Transformer) or history `[B, 1, 2H]` (TrellisNet).
    past: Tensor<f64>,
    /// The memory's injections `[B, M, 3d]` (Transformer; unused by TrellisNet).
    past_u: Tensor<f64>,
    z: Tensor<f64>,
}

/// A cell behind a reference, as a sized [`ImplicitCell`].
struct Dyn<'a, T: Float>(&'a dyn ImplicitCell<T>);

impl<T: Float> ImplicitCell<T> for Dyn<'_, T> {
    fn apply(&self, z: &Var<T>, x: &Var<T>, p: &[Var<T>]) -> Var<T> {
        self.0.apply(z, x, p)
    }
}

/// A callback given the cell and its prepared parameters.
type WithCell<'f, T, R> = dyn FnMut(Dyn<'_, T>, &[Var<T>]) -> R + 'f;

impl Case {
    /// Calls `f(cell, prepared params)` for the parameters `p` (in `T`).
    fn with_cell<T: Float, R>(&self, p: &[Var<T>], f: &mut WithCell<'_, T, R>) -> R {
        let (b, past) = (self.x.shape()[0], self.past.cast::<T>());
        match &self.cell {
            Cell::Transformer(c) => {
                let past_u = self.past_u.cast::<T>();
                let klen = past.shape()[1] + self.x.shape()[1];
                let eff = c.prepare(p, Some((&past, &past_u)), klen, None);
                let step = c.step(b, None);
                f(Dyn(&step), &eff)
            }
            Cell::Trellis(c) => {
                let eff = c.prepare(p, None);
                let step = c.step(b, Some(past), None);
                f(Dyn(&step), &eff)
            }
        }
    }

    /// Solves for the equilibrium (f64, tight) and stores it.
    fn solve(mut self) -> Case {
        let s = SolverConfig::new(
            SolverKind::Broyden { memory: 60 },
            200,
            1e-12,
            StopMode::Abs,
        )
        .unwrap();
        let cfg = DeqConfig::new(s.clone(), s, BackwardMode::Implicit).unwrap();
        let x = Var::constant(self.x.clone());
        let z0 = self.z.clone();
        let out = self.with_cell(&self.store.constants(), &mut |cell, eff| {
            no_grad(|| deq(&cell, &x, eff, &z0, &cfg))
        });
        let fwd = out.stats.forward.as_ref().unwrap();
        assert!(fwd.all_converged(), "{}: {:?}", self.name, fwd.lowest_abs);
        self.z = out.z.into_value();
        self
    }

    /// The penalty at the stored equilibrium for parameters `p` and injection `x`.
    fn penalty<T: Float>(&self, x: &Var<T>, p: &[Var<T>]) -> Var<T> {
        let z = self.z.cast::<T>();
        self.with_cell(p, &mut |cell, eff| {
            jacobian_penalty(&cell, x, eff, &z, PROBES, &mut Rng::new(PROBE_SEED))
        })
    }

    /// The penalty computed in `T` and its gradient with respect to `x` and every parameter.
    fn penalty_and_gradient<T: Float>(&self) -> (f64, Vec<Tensor<f64>>) {
        let tape = Tape::<T>::new();
        let x = tape.leaf(self.x.cast::<T>());
        let p: Vec<Var<T>> = self
            .store
            .values()
            .iter()
            .map(|v| tape.leaf(v.cast::<T>()))
            .collect();
        let pen = self.penalty(&x, &p);
        let mut wrt = vec![&x];
        wrt.extend(p.iter());
        let g = tape.vjp(&[&pen], &[&Tensor::scalar(T::ONE)], &wrt);
        (
            pen.item().to_f64(),
            g.iter().map(Tensor::cast::<f64>).collect(),
        )
    }

    /// `Σ_probes ‖J ε‖² / (probes · N)` with `J = ∂f/∂z` at the equilibrium built row by row
    /// from VJPs: the quantity the penalty estimates, without the central difference.
    fn exact_penalty(&self) -> f64 {
        let n = self.z.numel();
        let tape = Tape::<f64>::new();
        let z = tape.leaf(self.z.clone());
        let x = Var::constant(self.x.clone());
        let fz = self.with_cell(&self.store.constants(), &mut |cell, eff| {
            cell.apply(&z, &x, eff)
        });
        let rows: Vec<Tensor<f64>> = (0..n)
            .map(|i| {
                let unit = Tensor::from_fn(self.z.shape(), |k| if k == i { 1.0 } else { 0.0 });
                tape.vjp(&[&fz], &[&unit], &[&z]).remove(0)
            })
            .collect();
        let mut rng = Rng::new(PROBE_SEED);
        let mut total = 0.0;
        for _ in 0..PROBES {
            let eps = Tensor::<f64>::randn(self.z.shape(), 1.0, &mut rng);
            total += rows.iter().map(|row| row.dot(&eps).powi(2)).sum::<f64>();
        }
        total / (PROBES * n) as f64
    }
}

fn transformer(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let mut store = ParamStore::new();
    let cfg = TransformerConfig {
        d_model: 4,
        n_head: 2,
        d_inner: 8,
        mem_len: 2,
        dropout: 0.0,
        pos_dropout: 0.0,
        att_dropout: 0.0,
        weight_norm: true,
    };
    let cell = DeqTransformerCell::new(&mut store, "cell", &cfg, &mut rng);
    let (b, t, m, d) = (2, 3, 2, 4);
    Case {
        name: format!("DEQ-Transformer cell (seed {seed})"),
        cell: Cell::Transformer(Box::new(cell)),
        store,
        x: Tensor::randn(&[b, t, 3 * d], 0.5, &mut rng),
        past: Tensor::randn(&[b, m, d], 1.0, &mut rng),
        past_u: Tensor::randn(&[b, m, 3 * d], 0.5, &mut rng),
        z: Tensor::zeros(&[b, t, d]),
    }
    .solve()
}

fn trellis(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let mut store = ParamStore::new();
    let h = 4;
    let cfg = TrellisConfig {
        weight_norm: false,
        hidden: h,
        dropout: 0.0,
        weight_drop: 0.0,
    };
    let cell = TrellisNetCell::new(&mut store, "cell", &cfg, &mut rng);
    let (b, t) = (2, 3);
    Case {
        name: format!("TrellisNet cell (seed {seed})"),
        cell: Cell::Trellis(cell),
        store,
        x: Tensor::randn(&[b, t, 4 * h], 0.5, &mut rng),
        past: Tensor::randn(&[b, 1, 2 * h], 0.5, &mut rng),
        past_u: Tensor::zeros(&[0]),
        z: Tensor::zeros(&[b, t, 2 * h]),
    }
    .solve()
}

/// `max |a − b|` over the largest `|b|`.
fn rel_err(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    let scale = b.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = a
        .data()
        .iter()
        .zip(b.data())
        .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
    err / scale
}

#[test]
fn f64_penalty_inside_both_cells_matches_the_exact_jacobian_products() {
    for case in [transformer(2), trellis(3)] {
        let (pen, _) = case.penalty_and_gradient::<f64>();
        let exact = case.exact_penalty();
        let rel = (pen - exact).abs() / exact;
        println!(
            "{}: penalty {pen:.6e}, exact {exact:.6e}, relative error {rel:.1e}",
            case.name
        );
        assert!(rel < F64_PENALTY_ERROR, "{}: {rel:e}", case.name);
    }
}

#[test]
fn f64_penalty_gradients_inside_both_cells_match_finite_differences() {
    let opts = GradcheckOptions {
        step: 1e-5,
        tolerance: 1e-4,
        abs_tolerance: 0.0,
        seed: 1,
    };
    for case in [transformer(2), trellis(3)] {
        let mut inputs = vec![case.x.clone()];
        inputs.extend(case.store.values().iter().cloned());
        let report = gradcheck(|v| case.penalty(&v[0], &v[1..]), &inputs, &opts);
        assert!(report.passed(), "{}\n{report}", case.name);
    }
}

/// In f32, the penalty and its gradient (with respect to the injection and every parameter)
/// against the f64 computation at the same point, at the documented bounds.
#[test]
fn f32_penalty_and_gradients_inside_both_cells_are_within_the_stated_bounds() {
    for case in [1, 2, 3, 5, 6, 7, 8, 10]
        .map(transformer)
        .into_iter()
        .chain([trellis(3), trellis(7)])
    {
        let (p64, g64) = case.penalty_and_gradient::<f64>();
        let (p32, g32) = case.penalty_and_gradient::<f32>();
        let pen_err = (p32 - p64).abs() / p64;
        let grad_err = g32
            .iter()
            .zip(&g64)
            .map(|(a, b)| rel_err(a, b))
            .fold(0.0, f64::max);
        println!(
            "{}: f32 penalty error {pen_err:.1e}, gradient error {grad_err:.1e}",
            case.name
        );
        assert!(
            pen_err < F32_PENALTY_ERROR,
            "{}: penalty {pen_err:e}",
            case.name
        );
        assert!(
            grad_err < F32_GRADIENT_ERROR,
            "{}: gradient {grad_err:e}",
            case.name
        );
    }
}
