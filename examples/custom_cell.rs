//! Writing your own implicit layer with the public API only: a monotone-operator-style cell,
//! solved with each solver, trained on a toy regression task, its solver statistics read from
//! `DeqOutput::stats`, and its gradients checked with `check_cell`.
//!
//! The cell is one forward-backward splitting step of a monotone operator equilibrium network
//! (Winston & Kolter 2020):
//!
//! `f(z) = relu(z − α·((I − W)·z − (U·x + b)))`, `W = (1 − m)·I − AᵀA + B − Bᵀ`,
//!
//! so `I − W = m·I + AᵀA − (B − Bᵀ)` is strongly monotone (`⪰ m·I`) for any `A`, `B`: the
//! equilibrium `z* = f(z*)` exists, is unique, and is `z* = relu(W·z* + U·x + b)`. The state is
//! a batch of row vectors, so `M·z` is written `z·Mᵀ`.
//!
//! Run: `cargo run --release --example custom_cell`

use deq_autograd::{no_grad, Float, Rng, Tape, Tensor, Var};
use deq_models::optim::{Adam, AdamConfig};
use deq_solvers::implicit::{check_cell, CellCheckOptions};
use deq_solvers::{
    deq, BackwardMode, DeqConfig, ImplicitCell, SolveStats, SolverConfig, SolverKind, StopMode,
};
use std::time::Instant;

/// The cell's constants; its parameters `[A, B, U, b]` are passed to every call.
struct MonotoneCell {
    /// Strong-monotonicity margin `m`.
    m: f64,
    /// Splitting step `α`.
    alpha: f64,
}

impl<T: Float> ImplicitCell<T> for MonotoneCell {
    fn apply(&self, z: &Var<T>, x: &Var<T>, p: &[Var<T>]) -> Var<T> {
        let (a, b, u, bias) = (&p[0], &p[1], &p[2], &p[3]);
        // Row form of (I − W)·z = m·z + AᵀA·z − (B − Bᵀ)·z:  m·z + (z·Aᵀ)·A − z·Bᵀ + z·B.
        let monotone = z
            .mul_scalar(self.m)
            .add(&z.linear(a, None).matmul(a))
            .sub(&z.linear(b, None))
            .add(&z.matmul(b));
        let injection = x.linear(u, Some(bias));
        z.sub(&monotone.sub(&injection).mul_scalar(self.alpha))
            .relu()
    }
}

const CELL: MonotoneCell = MonotoneCell { m: 2.0, alpha: 0.3 };
const HIDDEN: usize = 24;
const INPUT: usize = 2;
const STEPS: usize = 300;

/// `y = sin(2·x₀)·cos(x₁) + x₀·x₁ / 2` on `[-1.5, 1.5]²`.
fn dataset(n: usize, rng: &mut Rng) -> (Tensor<f32>, Tensor<f32>) {
    let x = Tensor::<f32>::rand_uniform(&[n, INPUT], -1.5, 1.5, rng);
    let y = Tensor::from_fn(&[n, 1], |i| {
        let (a, b) = (x.data()[2 * i], x.data()[2 * i + 1]);
        (2.0 * a).sin() * b.cos() + 0.5 * a * b
    });
    (x, y)
}

/// Cell parameters `[A, B, U, b]` and the readout `[C, c]`: `ŷ = z·Cᵀ + c`.
fn init(rng: &mut Rng) -> Vec<Tensor<f32>> {
    let s = 0.3 / (HIDDEN as f64).sqrt();
    vec![
        Tensor::randn(&[HIDDEN, HIDDEN], s, rng),
        Tensor::randn(&[HIDDEN, HIDDEN], s, rng),
        Tensor::randn(&[HIDDEN, INPUT], 1.0, rng),
        Tensor::randn(&[HIDDEN], 0.1, rng),
        Tensor::randn(&[1, HIDDEN], 1.0 / (HIDDEN as f64).sqrt(), rng),
        Tensor::zeros(&[1]),
    ]
}

/// Mean squared error of the model on `(x, y)`, with the layer's output (`p` are variables).
fn loss_of(
    p: &[Var<f32>],
    x: &Tensor<f32>,
    y: &Tensor<f32>,
    cfg: &DeqConfig,
) -> (Var<f32>, deq_solvers::DeqStats) {
    let z0 = Tensor::zeros(&[x.dim(0), HIDDEN]);
    let out = deq(&CELL, &Var::constant(x.clone()), &p[..4], &z0, cfg);
    let pred = out.z.linear(&p[4], Some(&p[5]));
    let err = pred.sub(&Var::constant(y.clone()));
    (err.mul(&err).mean_all(), out.stats)
}

/// One model trained with one solver.
struct Run {
    name: &'static str,
    cfg: DeqConfig,
    params: Vec<Tensor<f32>>,
    adam: Adam<f32>,
    loss: f64,
    last_fwd: SolveStats,
    last_bwd: SolveStats,
    fwd_iters: usize,
    bwd_iters: usize,
    unconverged_steps: usize,
    seconds: f64,
}

impl Run {
    fn new(name: &'static str, kind: SolverKind, params: &[Tensor<f32>]) -> Self {
        let s = SolverConfig::new(kind, 60, 1e-4, StopMode::Rel).expect("valid solver");
        Run {
            name,
            cfg: DeqConfig::new(s.clone(), s, BackwardMode::Implicit).expect("valid config"),
            params: params.to_vec(),
            adam: Adam::new(AdamConfig::default(), params),
            loss: f64::NAN,
            last_fwd: SolveStats::default(),
            last_bwd: SolveStats::default(),
            fwd_iters: 0,
            bwd_iters: 0,
            unconverged_steps: 0,
            seconds: 0.0,
        }
    }

    /// One Adam step on the whole training set.
    fn step(&mut self, x: &Tensor<f32>, y: &Tensor<f32>, lr: f64) {
        let start = Instant::now();
        let tape = Tape::new();
        let p: Vec<Var<f32>> = self.params.iter().map(|t| tape.leaf(t.clone())).collect();
        let (loss, stats) = loss_of(&p, x, y, &self.cfg);
        let wrt: Vec<&Var<f32>> = p.iter().collect();
        let grads = tape.vjp(&[&loss], &[&Tensor::scalar(1.0)], &wrt);
        self.adam.step(&mut self.params, &grads, lr);
        self.seconds += start.elapsed().as_secs_f64();

        self.loss = loss.item() as f64;
        let fwd = stats.forward.clone().expect("implicit mode solves forward");
        let bwd = stats.backward().expect("the VJP ran the adjoint solve");
        self.fwd_iters += fwd.iterations;
        self.bwd_iters += bwd.iterations;
        if !fwd.all_converged() || !bwd.all_converged() {
            self.unconverged_steps += 1;
        }
        (self.last_fwd, self.last_bwd) = (fwd, bwd);
    }

    fn eval(&self, x: &Tensor<f32>, y: &Tensor<f32>) -> f64 {
        let p: Vec<Var<f32>> = self.params.iter().cloned().map(Var::constant).collect();
        no_grad(|| loss_of(&p, x, y, &self.cfg).0.item() as f64)
    }
}

fn main() {
    let mut rng = Rng::new(2024);
    let (x_train, y_train) = dataset(256, &mut rng);
    let (x_test, y_test) = dataset(256, &mut rng);
    let params = init(&mut rng);
    let variance = {
        let mean = y_train.data().iter().sum::<f32>() / 256.0;
        y_train
            .data()
            .iter()
            .map(|v| (v - mean).powi(2))
            .sum::<f32>()
            / 256.0
    };

    let mut runs = [
        Run::new("naive", SolverKind::Naive { tau: 1.0 }, &params),
        // Anderson's ridge λ is absolute: it must stay small against ‖G‖², the squared
        // residuals near the tolerance. The adjoint solve's residuals scale with ∂L/∂z*
        // (about 1e-5 here: a mean over 256 samples), so the default λ = 1e-4 would swamp the
        // least-squares system and reduce Anderson to averaging its last m iterates.
        Run::new(
            "anderson",
            SolverKind::Anderson {
                m: 5,
                lam: 1e-16,
                beta: 1.0,
            },
            &params,
        ),
        Run::new("broyden", SolverKind::Broyden { memory: 30 }, &params),
    ];

    println!(
        "monotone DEQ cell z = relu(z − α((I − W)z − (Ux + b))), hidden {HIDDEN}, m = {}, α = {}",
        CELL.m, CELL.alpha
    );
    println!(
        "toy regression y = sin(2x₀)cos(x₁) + x₀x₁/2: 256 training points (target variance \
         {variance:.3}), full batch, Adam lr 1e-2, f32, solves to rel 1e-4"
    );
    println!(
        "\n{:>5}  {:>26}  {:>26}  {:>26}",
        "", "naive", "anderson", "broyden"
    );
    println!(
        "{:>5}  {}",
        "step",
        ["loss     fwd it  bwd it"; 3]
            .map(|h| format!("{h:>26}"))
            .join("  ")
    );
    for step in 1..=STEPS {
        let lr = if step <= 200 { 1e-2 } else { 3e-3 };
        for run in runs.iter_mut() {
            run.step(&x_train, &y_train, lr);
        }
        if step == 1 || step % 25 == 0 {
            let cols: Vec<String> = runs
                .iter()
                .map(|r| {
                    format!(
                        "{:>10.5} {:>7} {:>7}",
                        r.loss, r.last_fwd.iterations, r.last_bwd.iterations
                    )
                })
                .collect();
            println!("{step:>5}  {}", cols.join("  "));
        }
    }

    println!(
        "\n{:<9} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>11} {:>8}",
        "solver",
        "train mse",
        "test mse",
        "fwd it/s",
        "bwd it/s",
        "fwd resid",
        "bwd resid",
        "unconverged",
        "time s"
    );
    for r in &runs {
        println!(
            "{:<9} {:>10.5} {:>10.5} {:>8.1} {:>8.1} {:>10.2e} {:>10.2e} {:>11} {:>8.2}",
            r.name,
            r.loss,
            r.eval(&x_test, &y_test),
            r.fwd_iters as f64 / STEPS as f64,
            r.bwd_iters as f64 / STEPS as f64,
            r.last_fwd.max_rel(),
            r.last_bwd.max_rel(),
            r.unconverged_steps,
            r.seconds
        );
    }
    println!(
        "(it/s: mean solver iterations per training step; resid: the last step's largest \
         relative residual; unconverged: steps where a solve stopped at max_iter)"
    );

    // The trained cell's gradients, in f64, on 3 test inputs: op-level VJPs and the implicit
    // gradient through tight Broyden solves, against finite differences.
    let trained: Vec<Tensor<f64>> = runs[2].params[..4].iter().map(|t| t.cast()).collect();
    let x_check = Tensor::from_fn(&[3, INPUT], |i| x_test.data()[i] as f64);
    let start = Instant::now();
    let report = check_cell(
        &CELL,
        &x_check,
        &trained,
        &Tensor::zeros(&[3, HIDDEN]),
        &CellCheckOptions::default(),
    );
    println!(
        "\ngradient check of the trained cell (param 0 = A, 1 = B, 2 = U, 3 = b; {:.1} s):\n{report}",
        start.elapsed().as_secs_f64()
    );
    println!(
        "largest relative error {:.2e}, largest absolute error {:.2e}",
        report.max_rel_error(),
        report.max_abs_error()
    );
    if !report.passed() {
        std::process::exit(1);
    }
}
