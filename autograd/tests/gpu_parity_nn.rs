//! GPU parity of the network ops (see `gpu/mod.rs`): softmax and log-softmax, layer norm with
//! and without the affine map, fused cross-entropy, masked fill, dropout with a given mask and
//! embedding, forward and VJP of every input, in f32 and f64.
//!
//! The shapes stress the row kernels (one block per row looping over the columns): rows not a
//! multiple of 32, rows longer than a block (1500, 10 000 columns), single-column rows, empty
//! tensors; masks broadcast in every position; gradients accumulated through an input used
//! twice. Besides parity: the GPU validates ids and targets with the CPU's panics, the no-grad
//! cross-entropy matches, and the reductions are deterministic (bitwise equal reruns).
// Without the `cuda` feature there is no GPU code to compare with the CPU.
#![cfg(feature = "cuda")]

mod gpu;

use deq_autograd::{dropout_mask, no_grad, Device, Float, Mask, Rng, Tape, Tensor, Var};
use gpu::{randn, uniform, Parity};
use std::slice::from_ref;

/// `n` ids in `0..vocab` from `seed`, with some repeated on purpose (the scatter-add sums them).
fn ids(n: usize, vocab: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<usize> = (0..n).map(|_| rng.below(vocab)).collect();
    for j in (3..n).step_by(4) {
        v[j] = v[j / 2];
    }
    v
}

/// A boolean mask of `shape`, true with probability `p`.
fn random_mask(shape: &[usize], p: f64, seed: u64) -> Mask {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    Mask::new((0..n).map(|_| rng.uniform() < p).collect(), shape)
}

/// `t` on the device of `v` (so a closure can use a host tensor as a constant operand).
fn on<T: Float>(t: &Tensor<T>, v: &Var<T>) -> Tensor<T> {
    t.to_device(v.value().device()).expect("device open")
}

fn softmax_cases<T: Float>(dev: Device, p: &mut Parity) {
    let shapes: [&[usize]; 9] = [
        &[3, 37, 5],
        &[7, 128],
        &[5, 192],
        &[4, 1500],
        &[2, 10_000],
        &[1],
        &[6, 1],
        &[2, 1, 33],
        &[0, 4],
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let x = randn::<T>(shape, 10 + i as u64);
        p.case(dev, &format!("softmax {shape:?}"), from_ref(&x), |v| {
            v[0].softmax()
        });
        p.case(dev, &format!("log_softmax {shape:?}"), &[x], |v| {
            v[0].log_softmax()
        });
    }
    // Logits in [95, 100): only the max subtraction keeps e^x finite in f32. (Larger logits
    // would put a one-ulp difference of lse beyond the f32 tolerance; widely spread ones would
    // make the softmax nearly one-hot, and its VJP then cancels to values whose f32 round-off
    // depends on the summation order.)
    let big = uniform::<T>(&[9, 300], 95.0, 100.0, 20);
    p.case(dev, "softmax of logits near 100", from_ref(&big), |v| {
        v[0].softmax()
    });
    p.case(dev, "log_softmax of logits near 100", &[big], |v| {
        v[0].log_softmax()
    });
    let x = randn::<T>(&[4, 37], 21);
    p.case(
        dev,
        "softmax + log_softmax (accumulating)",
        from_ref(&x),
        |v| v[0].softmax().add(&v[0].log_softmax()),
    );
    p.case(dev, "softmax(log_softmax) (chained)", &[x], |v| {
        v[0].log_softmax().softmax()
    });
}

fn layer_norm_cases<T: Float>(dev: Device, p: &mut Parity) {
    let shapes: [&[usize]; 7] = [
        &[6, 37],
        &[3, 5, 1500],
        &[4, 1],
        &[2, 3, 128],
        &[700, 33],
        &[1, 192],
        &[0, 8],
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let d = *shape.last().unwrap();
        let seed = 30 + 3 * i as u64;
        let x = randn::<T>(shape, seed);
        let gamma = randn::<T>(&[d], seed + 1);
        let beta = randn::<T>(&[d], seed + 2);
        p.case(dev, &format!("layer_norm {shape:?}"), from_ref(&x), |v| {
            v[0].layer_norm(1e-5)
        });
        p.case(
            dev,
            &format!("layer_norm_affine {shape:?}"),
            &[x, gamma, beta],
            |v| v[0].layer_norm_affine(&v[1], &v[2], 1e-5),
        );
    }
    let x = randn::<T>(&[9, 45], 60);
    let gamma = randn::<T>(&[45], 61);
    let beta = randn::<T>(&[45], 62);
    p.case(dev, "layer_norm eps 0.1", from_ref(&x), |v| {
        v[0].layer_norm(0.1)
    });
    p.case(
        dev,
        "layer_norm_affine, gamma as beta (accumulating)",
        &[x.clone(), gamma.clone()],
        |v| v[0].layer_norm_affine(&v[1], &v[1], 1e-5),
    );
    p.case(
        dev,
        "layer_norm_affine twice (accumulating every input)",
        &[x, gamma, beta],
        |v| {
            let y = v[0].layer_norm_affine(&v[1], &v[2], 1e-5);
            y.layer_norm_affine(&v[1], &v[2], 1e-5).add(&v[0])
        },
    );
}

fn cross_entropy_cases<T: Float>(dev: Device, p: &mut Parity) {
    let big = uniform::<T>(&[5, 10_000], -15.0, 15.0, 70);
    let t_big = vec![0, 9_999, 4_321, 17, 9_999];
    p.case(dev, "cross_entropy [5, 10000]", &[big], |v| {
        v[0].cross_entropy(&t_big)
    });
    let x3 = randn::<T>(&[3, 7, 11], 71);
    let t3 = ids(21, 11, 72);
    p.case(dev, "cross_entropy [3, 7, 11]", &[x3], |v| {
        v[0].cross_entropy(&t3)
    });
    let x1 = randn::<T>(&[1, 1], 73);
    p.case(dev, "cross_entropy [1, 1]", &[x1], |v| {
        v[0].cross_entropy(&[0])
    });
    let x64 = uniform::<T>(&[64, 33], -60.0, 60.0, 74);
    let t64 = ids(64, 33, 75);
    let t64b = ids(64, 33, 76);
    p.case(
        dev,
        "cross_entropy [64, 33] logits in ±60",
        from_ref(&x64),
        |v| v[0].cross_entropy(&t64),
    );
    p.case(
        dev,
        "cross_entropy twice (accumulating)",
        from_ref(&x64),
        |v| v[0].cross_entropy(&t64).add(&v[0].cross_entropy(&t64b)),
    );
    p.case(dev, "cross_entropy(layer_norm) (chained)", &[x64], |v| {
        v[0].layer_norm(1e-5).cross_entropy(&t64)
    });
}

fn embedding_cases<T: Float>(dev: Device, p: &mut Parity) {
    let w = randn::<T>(&[50, 33], 80);
    let a = ids(36, 50, 81);
    let b = ids(36, 50, 82);
    p.case(dev, "embedding [50, 33] by [4, 9]", from_ref(&w), |v| {
        v[0].embedding(&a, &[4, 9])
    });
    p.case(dev, "embedding twice (accumulating)", from_ref(&w), |v| {
        v[0].embedding(&a, &[4, 9])
            .add(&v[0].embedding(&b, &[4, 9]))
    });
    p.case(
        dev,
        "embedding of one id, ids shape []",
        from_ref(&w),
        |v| v[0].embedding(&[49], &[]),
    );
    p.case(dev, "embedding of no ids", &[w], |v| {
        v[0].embedding(&[], &[0])
    });
    let w1 = randn::<T>(&[7, 1], 83);
    let c = ids(15, 7, 84);
    p.case(dev, "embedding dim 1", &[w1], |v| {
        v[0].embedding(&c, &[3, 5])
    });
    let wide = randn::<T>(&[20, 1500], 85);
    let e = vec![3, 19, 3, 0, 3, 7];
    p.case(dev, "embedding dim 1500", &[wide], |v| {
        v[0].embedding(&e, &[2, 3])
    });
    let same = randn::<T>(&[300, 16], 86);
    let all_one = vec![42; 1000];
    p.case(dev, "embedding of one id 1000 times", &[same], |v| {
        v[0].embedding(&all_one, &[10, 100])
    });
}

fn masked_fill_cases<T: Float>(dev: Device, p: &mut Parity) {
    let shape = [2, 3, 5, 7];
    let x = randn::<T>(&shape, 90);
    let masks: [&[usize]; 8] = [
        &[2, 3, 5, 7],
        &[5, 7],
        &[3, 1, 7],
        &[2, 1, 1, 1],
        &[1, 3, 5, 1],
        &[7],
        &[1],
        &[],
    ];
    for (i, ms) in masks.iter().enumerate() {
        let m = random_mask(ms, 0.4, 91 + i as u64);
        for value in [0.0, -1e9, 2.5] {
            p.case(
                dev,
                &format!("masked_fill mask {ms:?} value {value}"),
                from_ref(&x),
                |v| v[0].masked_fill(&m, value),
            );
        }
    }
    let m = random_mask(&[5, 7], 0.5, 99);
    p.case(dev, "masked_fill + x (accumulating)", &[x], |v| {
        v[0].masked_fill(&m, 0.0).add(&v[0])
    });
    let scores = randn::<T>(&[2, 4, 9, 9], 100);
    let causal = Mask::causal(9);
    p.case(dev, "causal masked_fill(-inf) + softmax", &[scores], |v| {
        v[0].masked_fill(&causal, f64::NEG_INFINITY).softmax()
    });
    let mem_scores = randn::<T>(&[3, 5, 8], 101);
    let with_memory = Mask::causal_with_memory(5, 3);
    p.case(
        dev,
        "causal_with_memory(5, 3) + softmax",
        &[mem_scores],
        |v| v[0].masked_fill(&with_memory, f64::NEG_INFINITY).softmax(),
    );
    let long = randn::<T>(&[3, 1100], 102);
    let long_mask = random_mask(&[1100], 0.3, 103);
    p.case(dev, "masked_fill rows of 1100", &[long], |v| {
        v[0].masked_fill(&long_mask, -3.0)
    });
}

fn dropout_cases<T: Float>(dev: Device, p: &mut Parity) {
    let shape = [2, 3, 5, 7];
    let x = randn::<T>(&shape, 110);
    let masks: [&[usize]; 6] = [
        &[2, 3, 5, 7],
        &[1, 5, 7],
        &[7],
        &[2, 1, 1, 7],
        &[3, 1, 1],
        &[],
    ];
    for (i, ms) in masks.iter().enumerate() {
        let m = dropout_mask::<T>(ms, 0.3, &mut Rng::new(111 + i as u64));
        p.case(dev, &format!("dropout mask {ms:?}"), from_ref(&x), |v| {
            v[0].dropout(&on(&m, &v[0]))
        });
    }
    let m1 = dropout_mask::<T>(&shape, 0.5, &mut Rng::new(120));
    let m2 = dropout_mask::<T>(&[1, 5, 7], 0.2, &mut Rng::new(121));
    p.case(dev, "dropout twice (accumulating)", &[x], |v| {
        v[0].dropout(&on(&m1, &v[0]))
            .add(&v[0].dropout(&on(&m2, &v[0])))
    });
    let long = randn::<T>(&[4, 1100], 122);
    let m = dropout_mask::<T>(&[1, 1100], 0.1, &mut Rng::new(123));
    p.case(dev, "dropout rows of 1100, variational", &[long], |v| {
        v[0].dropout(&on(&m, &v[0]))
    });
}

fn all_cases<T: Float>(dev: Device, p: &mut Parity) {
    softmax_cases::<T>(dev, p);
    layer_norm_cases::<T>(dev, p);
    cross_entropy_cases::<T>(dev, p);
    embedding_cases::<T>(dev, p);
    masked_fill_cases::<T>(dev, p);
    dropout_cases::<T>(dev, p);
}

#[test]
fn nn_ops_match_cpu() {
    let Some(dev) = gpu::device("nn_ops_match_cpu") else {
        return;
    };
    let mut p = Parity::default();
    all_cases::<f32>(dev, &mut p);
    all_cases::<f64>(dev, &mut p);
    p.finish("nn_ops_match_cpu");
}

/// The cross-entropy of an unrecorded input (the forward kernel without the gradient) and of
/// a recorded one under `no_grad`, against the CPU.
fn no_grad_cross_entropy<T: Float>(dev: Device, failures: &mut Vec<String>) {
    let x = uniform::<T>(&[37, 2_000], -10.0, 10.0, 130);
    let t = ids(37, 2_000, 131);
    let loss = |x: &Tensor<T>, record: bool| -> f64 {
        let tape = Tape::new();
        if record {
            let leaf = tape.leaf(x.clone());
            no_grad(|| leaf.cross_entropy(&t)).item().to_f64()
        } else {
            Var::constant(x.clone()).cross_entropy(&t).item().to_f64()
        }
    };
    let gx = x.to_device(dev).expect("device open");
    for record in [false, true] {
        let (c, g) = (loss(&x, record), loss(&gx, record));
        if let Err(e) = deq_cuda::harness::compare(&[g], &[c], gpu::tolerance::<T>()) {
            failures.push(format!(
                "cross_entropy no-grad (recorded leaf: {record}) [{}]: {e}",
                T::DTYPE
            ));
        }
    }
}

#[test]
fn no_grad_cross_entropy_matches_cpu() {
    let Some(dev) = gpu::device("no_grad_cross_entropy_matches_cpu") else {
        return;
    };
    let mut failures = Vec::new();
    no_grad_cross_entropy::<f32>(dev, &mut failures);
    no_grad_cross_entropy::<f64>(dev, &mut failures);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The panic message of `f`, or `None` when it returns.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    r.err().map(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn gpu_rejects_bad_ids_and_targets_like_cpu() {
    let Some(dev) = gpu::device("gpu_rejects_bad_ids_and_targets_like_cpu") else {
        return;
    };
    let logits = randn::<f32>(&[3, 10], 140);
    let table = randn::<f32>(&[6, 4], 141);
    type Case = (&'static str, Box<dyn Fn(Device)>);
    let cases: Vec<Case> = vec![
        (
            "target out of range",
            Box::new(move |d| {
                let x = Var::constant(logits.to_device(d).unwrap());
                x.cross_entropy(&[0, 10, 2]);
            }),
        ),
        (
            "target count",
            Box::new(move |d| {
                let x = Var::constant(randn::<f32>(&[3, 10], 142).to_device(d).unwrap());
                x.cross_entropy(&[0, 1]);
            }),
        ),
        (
            "id out of range",
            Box::new(move |d| {
                let w = Var::constant(table.to_device(d).unwrap());
                w.embedding(&[1, 6], &[2]);
            }),
        ),
        (
            "mask shape",
            Box::new(move |d| {
                let x = Var::constant(randn::<f32>(&[3, 4], 143).to_device(d).unwrap());
                x.masked_fill(&Mask::causal(3), 0.0);
            }),
        ),
        (
            "affine shape",
            Box::new(move |d| {
                let x = Tape::new().leaf(randn::<f32>(&[3, 4], 144).to_device(d).unwrap());
                let g = Var::constant(randn::<f32>(&[3], 145).to_device(d).unwrap());
                x.layer_norm_affine(&g, &g, 1e-5);
            }),
        ),
    ];
    for (name, f) in &cases {
        let cpu = panic_message(|| f(Device::Cpu));
        let gpu = panic_message(|| f(dev));
        assert!(cpu.is_some(), "{name}: the CPU accepted it");
        assert_eq!(gpu, cpu, "{name}: the GPU panics differently");
    }
}

/// Forward values and gradients of `f` on the device, as host vectors.
fn gpu_run(
    dev: Device,
    inputs: &[Tensor<f32>],
    f: impl Fn(&[Var<f32>]) -> Var<f32>,
) -> Vec<Vec<f32>> {
    let tape = Tape::new();
    let leaves: Vec<Var<f32>> = inputs
        .iter()
        .map(|t| tape.leaf(t.to_device(dev).expect("device open")))
        .collect();
    let out = f(&leaves);
    let cot = randn::<f32>(out.shape(), 150).to_device(dev).unwrap();
    let refs: Vec<&Var<f32>> = leaves.iter().collect();
    let mut all = vec![out.value().to_vec()];
    all.extend(tape.vjp(&[&out], &[&cot], &refs).iter().map(Tensor::to_vec));
    all
}

#[test]
fn gpu_reductions_are_deterministic() {
    let Some(dev) = gpu::device("gpu_reductions_are_deterministic") else {
        return;
    };
    let x = randn::<f32>(&[300, 129], 151);
    let gamma = randn::<f32>(&[129], 152);
    let beta = randn::<f32>(&[129], 153);
    let ln = |v: &[Var<f32>]| v[0].layer_norm_affine(&v[1], &v[2], 1e-5);
    let w = randn::<f32>(&[40, 64], 154);
    let many = ids(5_000, 40, 155);
    let emb = |v: &[Var<f32>]| v[0].embedding(&many, &[50, 100]);
    let logits = randn::<f32>(&[3_000, 50], 156);
    let t = ids(3_000, 50, 157);
    let ce = |v: &[Var<f32>]| v[0].cross_entropy(&t);
    let inputs = [x, gamma, beta];
    assert_eq!(
        gpu_run(dev, &inputs, ln),
        gpu_run(dev, &inputs, ln),
        "layer_norm"
    );
    assert_eq!(
        gpu_run(dev, from_ref(&w), emb),
        gpu_run(dev, &[w], emb),
        "embedding"
    );
    let l = [logits];
    assert_eq!(gpu_run(dev, &l, ce), gpu_run(dev, &l, ce), "cross_entropy");
}
