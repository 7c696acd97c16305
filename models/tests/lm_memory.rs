//! The language models with memory from a previous segment (f64): gradients through the
//! memory path against finite differences, two segments against one long one, and causality.

use deq_autograd::{gradcheck, no_grad, GradcheckOptions, Rng, Tensor, Var};
use deq_models::cells::{TransformerConfig, TrellisConfig};
use deq_models::{CellConfig, LanguageModel, Memory, ModelConfig};
use deq_solvers::{BackwardMode, DeqConfig, SolverConfig, SolverKind, StopMode};

const VOCAB: usize = 7;

fn solver(kind: SolverKind, max_iter: usize, tol: f64) -> SolverConfig {
    SolverConfig::new(kind, max_iter, tol, StopMode::Abs).unwrap()
}

/// Broyden forward and backward to absolute tolerance 1e-12.
fn tight(mode: BackwardMode) -> DeqConfig {
    let s = solver(SolverKind::Broyden { memory: 60 }, 200, 1e-12);
    DeqConfig::new(s.clone(), s, mode).unwrap()
}

fn transformer(mem_len: usize) -> CellConfig {
    CellConfig::Transformer(TransformerConfig {
        d_model: 4,
        n_head: 2,
        d_inner: 8,
        mem_len,
        dropout: 0.0,
        pos_dropout: 0.0,
        att_dropout: 0.0,
        weight_norm: true,
    })
}

fn trellis() -> CellConfig {
    CellConfig::Trellisnet(TrellisConfig {
        weight_norm: true,
        hidden: 5,
        dropout: 0.0,
        weight_drop: 0.0,
    })
}

fn model(cell: CellConfig, seed: u64) -> LanguageModel<f64> {
    let cfg = ModelConfig {
        vocab: VOCAB,
        d_embed: 4,
        emb_dropout: 0.0,
        emb_scale: true,
        out_dropout: 0.0,
        cell,
    };
    LanguageModel::new(&cfg, &mut Rng::new(seed))
}

/// Logits `[B, T, V]` and the memory after `tokens` (`[B, T]`), evaluated without a tape.
fn run(
    m: &LanguageModel<f64>,
    tokens: &[usize],
    batch: usize,
    mem: &Memory<f64>,
    cfg: &DeqConfig,
) -> (Tensor<f64>, Memory<f64>, deq_solvers::DeqStats) {
    no_grad(|| {
        let (logits, stats, memory) = m.logits(&m.store.constants(), tokens, batch, mem, cfg, None);
        (logits.into_value(), memory, stats)
    })
}

/// Gradcheck of the second segment's loss with respect to every parameter, with the memory
/// the first segment left (held fixed, as the model detaches it).
fn check_with_memory(cell: CellConfig, mode: BackwardMode, expect_mem: usize) {
    let m = model(cell, 3);
    let cfg = tight(mode);
    let first = [1usize, 4, 2, 6, 0, 3];
    let (_, mem, _) = run(&m, &first, 2, &Memory::default(), &cfg);
    let z = mem.z.as_ref().expect("memory after the first segment");
    assert_eq!(z.shape()[..2], [2, expect_mem], "memory positions");
    let (tokens, targets) = ([5usize, 1, 0, 2, 6, 4], [1usize, 0, 3, 6, 4, 2]);
    let opts = GradcheckOptions {
        step: 1e-5,
        tolerance: 1e-5,
        abs_tolerance: 1e-9,
        seed: 1,
    };
    let report = gradcheck(
        |p: &[Var<f64>]| m.forward(p, &tokens, &targets, 2, &mem, &cfg, None).loss,
        m.store.values(),
        &opts,
    );
    println!("{report}");
    assert!(report.passed(), "{report}");
}

#[test]
fn transformer_lm_with_memory_implicit_gradients_match_finite_differences() {
    check_with_memory(transformer(2), BackwardMode::Implicit, 2);
}

#[test]
fn transformer_lm_with_memory_unrolled_gradients_match_finite_differences() {
    check_with_memory(transformer(2), BackwardMode::Unrolled { k: 2 }, 2);
}

#[test]
fn trellisnet_lm_with_memory_implicit_gradients_match_finite_differences() {
    check_with_memory(trellis(), BackwardMode::Implicit, 1);
}

#[test]
fn trellisnet_lm_with_memory_unrolled_gradients_match_finite_differences() {
    check_with_memory(trellis(), BackwardMode::Unrolled { k: 2 }, 1);
}

/// Positions `from..to` of `[B, T, V]` logits, per sample.
fn positions(x: &Tensor<f64>, from: usize, to: usize) -> Vec<f64> {
    let (b, t, v) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    (0..b)
        .flat_map(|s| x.data()[(s * t + from) * v..(s * t + to) * v].to_vec())
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max)
}

/// `[B, T]` tokens as the first `t1` and the last `T − t1` positions of each stream.
fn split(tokens: &[usize], batch: usize, t1: usize) -> (Vec<usize>, Vec<usize>) {
    let t = tokens.len() / batch;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for s in 0..batch {
        a.extend_from_slice(&tokens[s * t..s * t + t1]);
        b.extend_from_slice(&tokens[s * t + t1..(s + 1) * t]);
    }
    (a, b)
}

/// Two consecutive segments with memory give the logits of one long segment (the memory holds
/// the whole first segment), to the solver's tolerance.
fn segments_match_one_long_segment(cell: CellConfig) {
    let m = model(cell, 3);
    let cfg = tight(BackwardMode::Implicit);
    let long = [1usize, 4, 2, 6, 0, 3, 5, 2, 2, 1, 6, 0];
    let (first, second) = split(&long, 2, 3);
    let (whole, _, s0) = run(&m, &long, 2, &Memory::default(), &cfg);
    let (a, mem, s1) = run(&m, &first, 2, &Memory::default(), &cfg);
    let (b, _, s2) = run(&m, &second, 2, &mem, &cfg);
    for s in [&s0, &s1, &s2] {
        assert!(
            s.forward.as_ref().unwrap().all_converged(),
            "the solves converge"
        );
    }
    let d1 = max_diff(&positions(&a, 0, 3), &positions(&whole, 0, 3));
    let d2 = max_diff(&positions(&b, 0, 3), &positions(&whole, 3, 6));
    println!("first segment differs by {d1:.2e}, second by {d2:.2e}");
    assert!(d1 < 1e-9 && d2 < 1e-9, "{d1:e} {d2:e}");
}

#[test]
fn transformer_segments_with_memory_equal_one_long_segment() {
    // mem_len 4 ≥ the first segment's 3 positions: the memory keeps all of them.
    segments_match_one_long_segment(transformer(4));
}

#[test]
fn trellisnet_segments_with_memory_equal_one_long_segment() {
    segments_match_one_long_segment(trellis());
}

/// Logits of `tokens` and of the same tokens with the one at `changed` replaced, in every
/// stream; returns (max difference over earlier positions, over the changed position on).
fn change_a_later_token(
    m: &LanguageModel<f64>,
    cfg: &DeqConfig,
    changed: usize,
) -> (f64, f64, [deq_solvers::DeqStats; 2]) {
    let tokens = [1usize, 4, 2, 6, 0, 3, 5, 2, 2, 1];
    let t = 5;
    let mut other = tokens;
    for s in 0..2 {
        other[s * t + changed] = (other[s * t + changed] + 3) % VOCAB;
    }
    let (a, _, sa) = run(m, &tokens, 2, &Memory::default(), cfg);
    let (b, _, sb) = run(m, &other, 2, &Memory::default(), cfg);
    let before = max_diff(&positions(&a, 0, changed), &positions(&b, 0, changed));
    let after = max_diff(&positions(&a, changed, t), &positions(&b, changed, t));
    (before, after, [sa, sb])
}

fn causality(cell: CellConfig) {
    let m = model(cell, 3);
    // Naive iteration for exactly 12 steps: the positions never mix, so earlier logits are
    // bit for bit the same, provided both solves return the same iterate (the last: the
    // residuals fall at every step, checked).
    let mut naive = solver(SolverKind::Naive { tau: 1.0 }, 12, 1e-300);
    naive.early_stop = false;
    let cfg = DeqConfig::new(naive.clone(), naive, BackwardMode::Implicit).unwrap();
    let (before, after, stats) = change_a_later_token(&m, &cfg, 3);
    for s in &stats {
        let fwd = s.forward.as_ref().unwrap();
        for trace in &fwd.abs_trace {
            assert!(
                trace.windows(2).all(|w| w[1] < w[0]),
                "residuals must fall for the test to hold: {trace:?}"
            );
        }
    }
    assert_eq!(before, 0.0, "naive iteration: an earlier position changed");
    assert!(
        after > 1e-6,
        "the change must show from its position on: {after}"
    );
    // Unrolled: plain applications, exactly causal.
    let cfg = tight(BackwardMode::Unrolled { k: 4 });
    let (before, after, _) = change_a_later_token(&m, &cfg, 2);
    assert_eq!(before, 0.0, "unrolled: an earlier position changed");
    assert!(after > 1e-6, "{after}");
    // Anderson and Broyden mix positions of a sample (one mixing, one stop test per sample):
    // earlier positions agree to the solver's tolerance.
    let tol = 1e-9;
    for kind in [
        SolverKind::Anderson {
            m: 5,
            lam: 1e-8,
            beta: 1.0,
        },
        SolverKind::Broyden { memory: 30 },
    ] {
        let s = solver(kind.clone(), 300, tol);
        let cfg = DeqConfig::new(s.clone(), s, BackwardMode::Implicit).unwrap();
        let (before, after, stats) = change_a_later_token(&m, &cfg, 3);
        for s in &stats {
            let f = s.forward.as_ref().unwrap();
            assert!(
                f.all_converged(),
                "{kind:?}: {:?} {}",
                f.lowest_abs,
                f.iterations
            );
        }
        println!("{kind:?}: earlier positions differ by {before:.2e}, later by {after:.2e}");
        assert!(before <= 100.0 * tol, "{kind:?}: {before:e}");
        assert!(after > 1e-6, "{kind:?}: {after}");
    }
}

#[test]
fn transformer_lm_is_causal() {
    causality(transformer(2));
}

#[test]
fn trellisnet_lm_is_causal() {
    causality(trellis());
}
