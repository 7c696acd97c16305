//! Relative-position attention with memory against a direct O(T²) computation of the
//! Transformer-XL scores, and its gradients against finite differences (f64).
//!
//! The reference forms every score `((q_i + u)·k_j + (q_i + v)·R_{M+i−j}) / √d_h` one pair
//! `(i, j)` at a time, with the causal mask `j ≤ M + i`, then the softmax, the weighted sum of
//! values and the output projection, in plain loops: it shares no code with the layer (whose
//! position term is one product over all distances followed by a relative shift).

use deq_autograd::{gradcheck, GradcheckOptions, Rng, Tensor, Var};
use deq_models::layers::{rel_shift, RelAttention};

/// The sizes of one case.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    batch: usize,
    t: usize,
    mem: usize,
    heads: usize,
    dh: usize,
    d: usize,
}

impl Sizes {
    fn k(&self) -> usize {
        self.mem + self.t
    }
    fn hd(&self) -> usize {
        self.heads * self.dh
    }
}

/// Random inputs in the order `[cat, inj, w_qkv, r, w_o, b_o, r_w_bias, r_r_bias]`.
fn inputs(s: Sizes, seed: u64) -> Vec<Tensor<f64>> {
    let mut rng = Rng::new(seed);
    let mut r = |shape: &[usize], std: f64| Tensor::<f64>::randn(shape, std, &mut rng);
    let (k, hd, d) = (s.k(), s.hd(), s.d);
    vec![
        r(&[s.batch, k, d], 1.0),
        r(&[s.batch, k, 3 * hd], 0.5),
        r(&[3 * hd, d], 0.6),
        r(&[k, hd], 0.8),
        r(&[d, hd], 0.5),
        r(&[d], 0.1),
        r(&[s.heads, s.dh], 0.3),
        r(&[s.heads, s.dh], 0.3),
    ]
}

/// The layer's output for `v` (as in [`inputs`]).
fn attend(v: &[Var<f64>], s: Sizes) -> Var<f64> {
    RelAttention {
        w_qkv: &v[2],
        r: &v[3],
        w_o: &v[4],
        b_o: &v[5],
        r_w_bias: &v[6],
        r_r_bias: &v[7],
        heads: s.heads,
        dropout: None,
    }
    .attend(&v[0], &v[1], s.t)
}

/// `[B, T, d]` by the direct O(T²) computation of the module docs.
fn reference(x: &[Tensor<f64>], s: Sizes) -> Vec<f64> {
    let (b, t, m, h, dh, d, k, hd) = (s.batch, s.t, s.mem, s.heads, s.dh, s.d, s.k(), s.hd());
    let [cat, inj, w_qkv, r, w_o, b_o, u, v] = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| x[i].data());
    // qkv[n][p][c] = Σ_e cat[n][p][e]·W[c][e] + inj[n][p][c].
    let qkv = |n: usize, p: usize, c: usize| -> f64 {
        let row = &cat[(n * k + p) * d..(n * k + p + 1) * d];
        let w = &w_qkv[c * d..(c + 1) * d];
        row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + inj[(n * k + p) * 3 * hd + c]
    };
    let mut out = vec![0.0; b * t * d];
    for n in 0..b {
        let mut ctx = vec![0.0; t * hd];
        for head in 0..h {
            let col = |c: usize| head * dh + c;
            for i in 0..t {
                let q: Vec<f64> = (0..dh).map(|c| qkv(n, m + i, col(c))).collect();
                let mut scores = vec![f64::NEG_INFINITY; k];
                for (j, score) in scores.iter_mut().enumerate().take(m + i + 1) {
                    let dist = m + i - j;
                    let mut content = 0.0;
                    let mut position = 0.0;
                    for c in 0..dh {
                        let key = qkv(n, j, hd + col(c));
                        content += (q[c] + u[head * dh + c]) * key;
                        position += (q[c] + v[head * dh + c]) * r[dist * hd + col(c)];
                    }
                    *score = (content + position) / (dh as f64).sqrt();
                }
                let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|z| (z - top).exp()).collect();
                let total: f64 = weights.iter().sum();
                for c in 0..dh {
                    ctx[i * hd + col(c)] = (0..k)
                        .map(|j| weights[j] / total * qkv(n, j, 2 * hd + col(c)))
                        .sum();
                }
            }
        }
        for i in 0..t {
            for o in 0..d {
                let w = &w_o[o * hd..(o + 1) * hd];
                let c = &ctx[i * hd..(i + 1) * hd];
                out[(n * t + i) * d + o] =
                    c.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + b_o[o];
            }
        }
    }
    out
}

fn cases() -> Vec<Sizes> {
    let s = |batch, t, mem, heads, dh, d| Sizes {
        batch,
        t,
        mem,
        heads,
        dh,
        d,
    };
    vec![
        s(2, 3, 2, 2, 3, 4), // memory shorter than the segment
        s(1, 2, 4, 1, 2, 3), // memory longer than the segment
        s(2, 4, 0, 2, 2, 4), // no memory
        s(1, 1, 3, 3, 2, 5), // one query over a memory
    ]
}

#[test]
fn attention_with_memory_matches_the_direct_score_computation() {
    for (seed, s) in cases().into_iter().enumerate() {
        let x = inputs(s, 100 + seed as u64);
        let vars: Vec<Var<f64>> = x.iter().cloned().map(Var::constant).collect();
        let got = attend(&vars, s);
        assert_eq!(got.shape(), [s.batch, s.t, s.d], "{s:?}");
        let want = reference(&x, s);
        let err = got
            .value()
            .data()
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            err < 1e-12,
            "{s:?}: attention differs from the reference by {err:e}"
        );
    }
}

#[test]
fn attention_with_memory_gradients_match_finite_differences() {
    let opts = GradcheckOptions {
        tolerance: 1e-6,
        ..GradcheckOptions::default()
    };
    for (seed, s) in cases().into_iter().enumerate() {
        let x = inputs(s, 200 + seed as u64);
        let report = gradcheck(|v| attend(v, s), &x, &opts);
        assert!(report.passed(), "{s:?}\n{report}");
    }
}

/// `rel_shift` itself: output `[.., i, j]` is input `[.., i, M + i − j]` for `j ≤ M + i`,
/// else 0 (`M = K − T`).
fn rel_shift_reference(x: &Tensor<f64>) -> Vec<f64> {
    let s = x.shape();
    let (rows, t, k) = (s[0] * s[1] * s[2], s[2], s[3]);
    let m = k - t;
    let mut out = vec![0.0; x.numel()];
    for row in 0..rows {
        let i = row % t;
        for j in 0..k {
            if j <= m + i {
                out[row * k + j] = x.data()[row * k + m + i - j];
            }
        }
    }
    out
}

#[test]
fn rel_shift_reindexes_distances_to_keys_and_its_vjp_is_the_transpose() {
    let mut rng = Rng::new(9);
    for shape in [[2, 2, 3, 5], [1, 3, 4, 4], [1, 1, 1, 3], [2, 1, 3, 7]] {
        let x = Tensor::<f64>::randn(&shape, 1.0, &mut rng);
        let got = rel_shift(&Var::constant(x.clone()));
        assert_eq!(
            got.value().data(),
            rel_shift_reference(&x).as_slice(),
            "{shape:?}"
        );
        let report = gradcheck(
            |v| rel_shift(&v[0]),
            std::slice::from_ref(&x),
            &GradcheckOptions::default(),
        );
        assert!(report.passed(), "{shape:?}\n{report}");
    }
}
