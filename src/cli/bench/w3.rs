//! W3 "lm-step": one training step of a DEQ-Transformer language model (embedding 10000×256,
//! injection, the W2 block with 16 + 16 Broyden iterations, tied output, mean cross-entropy over
//! 8 × 128 tokens, Adam).

use super::alloc::peak_during;
use super::block::{block, params, D};
use super::nominal;
use super::timing::{measure, median};
use super::w2::fixed_broyden;
use super::{on_device, one, zeros};
use deq_autograd::{Rng, Tape, Tensor, Var};
use deq_models::optim::{Adam, AdamConfig};
use deq_solvers::{deq, BackwardMode};
use serde_json::{json, Value};

const VOCAB: usize = 10000;

/// Zipf-distributed ids `p(i) ∝ 1/(i+1)`.
fn zipf(n: usize, rng: &mut Rng) -> Vec<usize> {
    let weights: Vec<f64> = (0..VOCAB).map(|i| 1.0 / (i + 1) as f64).collect();
    let total: f64 = weights.iter().sum();
    (0..n)
        .map(|_| {
            let mut r = rng.uniform() * total;
            for (i, w) in weights.iter().enumerate() {
                if r < *w {
                    return i;
                }
                r -= w;
            }
            VOCAB - 1
        })
        .collect()
}

/// Runs W3 and prints its table; returns the figures as JSON.
pub fn bench(reps: usize, sgemm: f64) -> Value {
    let mut rng = Rng::new(3);
    let mut p = vec![
        Tensor::<f32>::randn(&[VOCAB, D], 0.02, &mut rng),
        Tensor::<f32>::zeros(&[VOCAB]),
        Tensor::<f32>::rand_uniform(&[D, D], -1.0 / 16.0, 1.0 / 16.0, &mut rng),
        Tensor::<f32>::rand_uniform(&[D], -1.0 / 16.0, 1.0 / 16.0, &mut rng),
    ];
    p.extend(params(&mut rng));
    let mut p: Vec<Tensor<f32>> = p.into_iter().map(on_device).collect();
    let ids = zipf(8 * 129, &mut rng);
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for row in ids.chunks(129) {
        inputs.extend_from_slice(&row[..128]);
        targets.extend_from_slice(&row[1..]);
    }
    let cfg = fixed_broyden(16, BackwardMode::Implicit);
    let mut adam = Adam::new(AdamConfig::default(), &p);
    let nparams: usize = p.iter().map(Tensor::numel).sum();
    let mut one_step = |p: &mut Vec<Tensor<f32>>| {
        let tape = Tape::new();
        let pv: Vec<Var<f32>> = p.iter().map(|t| tape.leaf(t.clone())).collect();
        let (loss, fwd, g1) = measure(|| {
            let emb = pv[0].embedding(&inputs, &[8, 128]);
            let x = emb.linear(&pv[2], Some(&pv[3]));
            let out = deq(&block, &x, &pv[4..], &zeros(&[8, 128, D]), &cfg);
            out.z.linear(&pv[0], Some(&pv[1])).cross_entropy(&targets)
        });
        let wrt: Vec<&Var<f32>> = pv.iter().collect();
        let (grads, bwd, g2) = measure(|| tape.vjp(&[&loss], &[&one()], &wrt));
        drop(tape);
        let (_, opt, _) = measure(|| adam.step(p, &grads, 1e-3));
        (fwd, bwd, opt, g1 + g2, loss.item())
    };
    one_step(&mut p);
    let mut totals = Vec::new();
    let mut parts = (0.0, 0.0, 0.0);
    let mut mem = 0;
    let mut engine_gflop = 0.0;
    for _ in 0..reps {
        let ((f, b, o, g, _), m) = peak_during(|| one_step(&mut p));
        totals.push(f + b + o);
        parts = (f, b, o);
        mem = m;
        engine_gflop = g;
    }
    let ms = median(&mut totals);
    let tps = 1024.0 / (ms / 1e3);
    let gflops = nominal::w3(16) / (ms / 1e3);
    println!(
        "W3 LM step: 8×128 tokens, vocab 10000, {:.2} M parameters",
        nparams as f64 / 1e6
    );
    println!(
        "step {ms:.1} ms (fwd {:.1}, bwd {:.1}, Adam {:.1}) = {tps:.0} tokens/s, {gflops:.1} GFLOP/s nominal ({:.2} of sgemm), peak heap {:.1} MiB",
        parts.0,
        parts.1,
        parts.2,
        gflops / sgemm,
        mem as f64 / (1 << 20) as f64
    );
    json!({"workload": "w3", "step_ms": ms, "fwd_ms": parts.0, "bwd_ms": parts.1, "adam_ms": parts.2,
        "tokens_per_second": tps, "peak_bytes": mem, "params": nparams, "gflops": gflops,
        "nominal_gflop": nominal::w3(16), "engine_gflop": engine_gflop, "sgemm_fraction": gflops / sgemm})
}
