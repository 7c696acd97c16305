//! `deq gradcheck`: the engine's ops, the implicit layer and both language models (with an
//! empty memory and with a previous segment's memory, implicit and unrolled) against central
//! finite differences in f64, as a table.

use clap::Args;
use deq_autograd::{gradcheck, no_grad, GradcheckOptions, GradcheckReport, Mask, Rng, Tensor, Var};
use deq_models::cells::{TransformerConfig, TrellisConfig};
use deq_models::error::Result;
use deq_models::{CellConfig, LanguageModel, Memory, ModelConfig};
use deq_solvers::{deq, BackwardMode, DeqConfig, SolverConfig, SolverKind, StopMode};
use std::process::ExitCode;

/// Options of `deq gradcheck`.
#[derive(Args, Debug)]
pub struct GradcheckArgs {
    /// Relative tolerance for op checks.
    #[arg(long, default_value_t = 1e-6)]
    op_tolerance: f64,
    /// Relative tolerance for implicit-gradient checks.
    #[arg(long, default_value_t = 1e-5)]
    implicit_tolerance: f64,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// Gradients below this absolute error pass whatever their relative error (finite-difference
/// round-off on near-zero gradients).
const ABS_FLOOR: f64 = 1e-9;

type Case = (&'static str, GradcheckReport);

fn op_cases(rng: &mut Rng, tol: f64) -> Vec<Case> {
    let opts = GradcheckOptions {
        tolerance: tol,
        ..GradcheckOptions::default()
    };
    let mut r = |s: &[usize]| Tensor::<f64>::randn(s, 1.0, rng);
    let (a, b, c) = (r(&[3, 4]), r(&[4]), r(&[4, 5]));
    let (x3, w3, bias) = (r(&[2, 5, 3]), r(&[2, 3, 4]), r(&[4]));
    let (g, be) = (r(&[4]), r(&[4]));
    let mask = Mask::causal(4);
    vec![
        (
            "add (broadcast)",
            gradcheck(|v| v[0].add(&v[1]), &[a.clone(), b.clone()], &opts),
        ),
        (
            "mul / div",
            gradcheck(
                |v| v[0].mul(&v[1]).div(&v[1].mul(&v[1]).add_scalar(1.0)),
                &[a.clone(), b.clone()],
                &opts,
            ),
        ),
        (
            "tanh / sigmoid / gelu",
            gradcheck(
                |v| v[0].tanh().add(&v[0].sigmoid()).add(&v[0].gelu()),
                std::slice::from_ref(&a),
                &opts,
            ),
        ),
        (
            "exp / log / sqrt",
            gradcheck(
                |v| v[0].exp().add_scalar(1.0).log().sqrt(),
                std::slice::from_ref(&a),
                &opts,
            ),
        ),
        (
            "matmul (transposed)",
            gradcheck(
                |v| v[0].matmul_t(&v[1], false, false),
                &[a.clone(), c.clone()],
                &opts,
            ),
        ),
        (
            "linear",
            gradcheck(
                |v| v[0].linear(&v[1], Some(&v[2])),
                &[r(&[2, 4]), a.clone(), r(&[3])],
                &opts,
            ),
        ),
        (
            "sum / mean / max",
            gradcheck(
                |v| {
                    v[0].sum_axis(1, false)
                        .add(&v[0].mean_axis(1, false))
                        .add(&v[0].max_axis(1, false))
                },
                std::slice::from_ref(&a),
                &opts,
            ),
        ),
        (
            "permute / narrow / concat / pad",
            gradcheck(
                |v| {
                    Var::concat(
                        &[
                            &v[0].transpose(0, 1).narrow(0, 1, 2),
                            &v[0].transpose(0, 1).pad(1, 1, 0, 0.5).narrow(1, 0, 3),
                        ],
                        0,
                    )
                },
                std::slice::from_ref(&a),
                &opts,
            ),
        ),
        (
            "softmax / log_softmax",
            gradcheck(
                |v| v[0].softmax().mul(&v[0].log_softmax()),
                std::slice::from_ref(&a),
                &opts,
            ),
        ),
        (
            "layer_norm (affine)",
            gradcheck(
                |v| v[0].layer_norm_affine(&v[1], &v[2], 1e-5),
                &[a.clone(), g, be],
                &opts,
            ),
        ),
        (
            "masked_fill + softmax",
            gradcheck(
                |v| v[0].masked_fill(&mask, f64::NEG_INFINITY).softmax(),
                &[r(&[2, 4, 4])],
                &opts,
            ),
        ),
        (
            "embedding",
            gradcheck(
                |v| v[0].embedding(&[2, 0, 2, 1], &[2, 2]),
                std::slice::from_ref(&a),
                &opts,
            ),
        ),
        (
            "causal_conv1d (dilation 2)",
            gradcheck(
                |v| v[0].causal_conv1d(&v[1], Some(&v[2]), 2),
                &[x3, w3, bias],
                &opts,
            ),
        ),
        (
            "cross_entropy",
            gradcheck(|v| v[0].cross_entropy(&[1, 3, 0]), &[a], &opts),
        ),
    ]
}

fn tight(mode: BackwardMode) -> DeqConfig {
    let s = SolverConfig::new(
        SolverKind::Broyden { memory: 60 },
        200,
        1e-12,
        StopMode::Abs,
    )
    .expect("valid solver");
    DeqConfig::new(s.clone(), s, mode).expect("valid config")
}

/// The gradient of one LM's loss with respect to every parameter, on a segment that follows
/// `previous` tokens (none: an empty memory; else the memory that segment leaves, so that
/// attention runs over `M > 0` memory positions and the relative shift with it).
fn lm_case(
    cell: CellConfig,
    mode: BackwardMode,
    previous: &[usize],
    opts: &GradcheckOptions,
) -> GradcheckReport {
    let mc = ModelConfig {
        vocab: 7,
        d_embed: 4,
        emb_dropout: 0.0,
        emb_scale: true,
        out_dropout: 0.0,
        cell,
    };
    let model = LanguageModel::<f64>::new(&mc, &mut Rng::new(3));
    let cfg = tight(mode);
    let memory = if previous.is_empty() {
        Memory::default()
    } else {
        no_grad(|| {
            model
                .logits(
                    &model.store.constants(),
                    previous,
                    2,
                    &Memory::default(),
                    &cfg,
                    None,
                )
                .2
        })
    };
    let (tokens, targets) = ([1usize, 4, 2, 6, 0, 3], [4usize, 2, 6, 0, 3, 5]);
    let values = model.store.values().to_vec();
    gradcheck(
        |p: &[Var<f64>]| {
            model
                .forward(p, &tokens, &targets, 2, &memory, &cfg, None)
                .loss
        },
        &values,
        opts,
    )
}

fn implicit_cases(rng: &mut Rng, tol: f64) -> Vec<Case> {
    let opts = GradcheckOptions {
        step: 1e-5,
        tolerance: tol,
        abs_tolerance: ABS_FLOOR,
        seed: 1,
    };
    let cfg = tight(BackwardMode::Implicit);
    let tanh_cell = |z: &Var<f64>, x: &Var<f64>, p: &[Var<f64>]| {
        z.linear(&p[0], None)
            .add(&x.linear(&p[1], Some(&p[2])))
            .tanh()
    };
    let w = Tensor::<f64>::randn(&[5, 5], 0.15, rng);
    let u = Tensor::<f64>::randn(&[5, 3], 0.5, rng);
    let b = Tensor::<f64>::randn(&[5], 0.1, rng);
    let x = Tensor::<f64>::randn(&[2, 3], 1.0, rng);
    let z0 = Tensor::zeros(&[2, 5]);
    let mut cases = vec![(
        "implicit: tanh cell",
        gradcheck(
            |v| deq(&tanh_cell, &v[0], &v[1..], &z0, &cfg).z,
            &[x, w, u, b],
            &opts,
        ),
    )];
    let transformer = || {
        CellConfig::Transformer(TransformerConfig {
            d_model: 4,
            n_head: 2,
            d_inner: 8,
            mem_len: 2,
            dropout: 0.0,
            pos_dropout: 0.0,
            att_dropout: 0.0,
            weight_norm: true,
        })
    };
    let trellis = || {
        CellConfig::Trellisnet(TrellisConfig {
            weight_norm: true,
            hidden: 5,
            dropout: 0.0,
            weight_drop: 0.0,
        })
    };
    // Three tokens per stream before the checked segment: memories of 2 (Transformer,
    // mem_len 2) and 1 (TrellisNet: the last state) positions.
    let previous = [5usize, 1, 0, 2, 6, 4];
    let (implicit, unrolled) = (BackwardMode::Implicit, BackwardMode::Unrolled { k: 2 });
    for (name, cell, mode, prev) in [
        (
            "implicit: DEQ-Transformer LM",
            transformer(),
            implicit,
            &[][..],
        ),
        ("implicit: DEQ-TrellisNet LM", trellis(), implicit, &[][..]),
        (
            "implicit: DEQ-Transformer LM, memory 2",
            transformer(),
            implicit,
            &previous[..],
        ),
        (
            "unrolled: DEQ-Transformer LM, memory 2",
            transformer(),
            unrolled,
            &previous[..],
        ),
        (
            "implicit: DEQ-TrellisNet LM, memory 1",
            trellis(),
            implicit,
            &previous[..],
        ),
        (
            "unrolled: DEQ-TrellisNet LM, memory 1",
            trellis(),
            unrolled,
            &previous[..],
        ),
    ] {
        cases.push((name, lm_case(cell, mode, prev, &opts)));
    }
    cases
}

/// Runs `deq gradcheck`.
pub fn run(a: GradcheckArgs) -> Result<ExitCode> {
    let mut rng = Rng::new(a.seed);
    let mut cases = op_cases(&mut rng, a.op_tolerance);
    cases.extend(implicit_cases(&mut rng, a.implicit_tolerance));
    println!(
        "{:<40} {:>7} {:>12} {:>12}  result",
        "check", "inputs", "max abs err", "max rel err"
    );
    let mut failed = 0;
    for (name, report) in &cases {
        let abs = report
            .inputs
            .iter()
            .map(|r| r.max_abs_error)
            .fold(0.0, f64::max);
        let ok = report
            .inputs
            .iter()
            .all(|r| r.max_abs_error.is_finite() && (r.passed || r.max_abs_error <= ABS_FLOOR));
        failed += !ok as usize;
        println!(
            "{name:<40} {:>7} {abs:>12.2e} {:>12.2e}  {}",
            report.inputs.len(),
            report.max_rel_error(),
            if ok { "pass" } else { "FAIL" }
        );
        if !ok {
            println!("{report}");
        }
    }
    println!(
        "{} checks, {} passed, {failed} failed (tolerance {:.0e} for ops, {:.0e} for implicit gradients; \
         absolute errors ≤ {ABS_FLOOR:.0e} pass)",
        cases.len(),
        cases.len() - failed,
        a.op_tolerance,
        a.implicit_tolerance
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
