//! GPU parity of the products: `matmul` / `matmul_t` (2-D, transposed either side, batched,
//! a 2-D operand broadcast over the batch on either side), the fused `linear` (with and
//! without bias, 2-D and 3-D inputs) and `causal_conv1d` (dilations 1 and 2, with and without
//! bias), forward and every VJP, in f32 and f64 (see `gpu/mod.rs`).
//!
//! Shapes are odd (7x13x5 and the like), include dimensions of size 1, rows and columns longer
//! than 1024, an empty inner dimension, and inputs used twice so that the VJPs accumulate
//! (`beta = 1` in cuBLAS, `acc` in the column sums).
// Without the `cuda` feature there is no GPU code to compare with the CPU.
#![cfg(feature = "cuda")]

mod gpu;

use deq_autograd::{Device, Float};
use gpu::{randn, Parity};

/// Every transpose combination of `a · b` for stored shapes `a`, `b` given as `[.., m, k]`
/// and `[.., k, n]` before transposing (the stored shapes are swapped for each flag).
fn transposes<T: Float>(dev: Device, p: &mut Parity, name: &str, a: &[usize], b: &[usize]) {
    let swap = |s: &[usize], t: bool| {
        let mut s = s.to_vec();
        let r = s.len();
        if t {
            s.swap(r - 2, r - 1);
        }
        s
    };
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (sa, sb) = (swap(a, ta), swap(b, tb));
        let inputs = [randn::<T>(&sa, 1), randn::<T>(&sb, 2)];
        let case = format!("{name} {sa:?}{} · {sb:?}{}", t(ta), t(tb));
        p.case(dev, &case, &inputs, |v| v[0].matmul_t(&v[1], ta, tb));
    }
}

fn t(flag: bool) -> &'static str {
    if flag {
        "ᵀ"
    } else {
        ""
    }
}

fn matmul_cases<T: Float>(dev: Device, p: &mut Parity) {
    transposes::<T>(dev, p, "2-D", &[7, 13], &[13, 5]);
    transposes::<T>(dev, p, "batched", &[3, 7, 13], &[3, 13, 5]);
    transposes::<T>(dev, p, "two batch dims", &[2, 3, 7, 13], &[2, 3, 13, 5]);
    transposes::<T>(dev, p, "shared b", &[4, 7, 13], &[13, 5]);
    transposes::<T>(dev, p, "shared b, two batch dims", &[2, 3, 7, 13], &[13, 5]);
    transposes::<T>(dev, p, "shared a", &[7, 13], &[4, 13, 5]);
    transposes::<T>(dev, p, "batch of one", &[1, 7, 13], &[1, 13, 5]);
    transposes::<T>(dev, p, "batch of one, shared b", &[1, 7, 13], &[13, 5]);
    transposes::<T>(dev, p, "m = 1", &[3, 1, 13], &[3, 13, 5]);
    transposes::<T>(dev, p, "n = 1", &[3, 7, 13], &[13, 1]);
    transposes::<T>(dev, p, "k = 1", &[7, 1], &[3, 1, 5]);
    transposes::<T>(dev, p, "long k", &[3, 37, 1100], &[1100, 9]);
    transposes::<T>(dev, p, "long n", &[5, 33], &[33, 1500]);
    transposes::<T>(dev, p, "empty k", &[2, 4, 0], &[2, 0, 3]);

    let sq = [randn::<T>(&[9, 9], 3)];
    p.case(dev, "a·a (accumulating)", &sq, |v| v[0].matmul(&v[0]));
    p.case(
        dev,
        "aᵀ·a (accumulating)",
        &[randn::<T>(&[7, 13], 4)],
        |v| v[0].matmul_t(&v[0], true, false),
    );
    let xw = [randn::<T>(&[4, 9, 9], 5), randn::<T>(&[9, 9], 6)];
    p.case(dev, "(x·w)·w, shared w (accumulating)", &xw, |v| {
        v[0].matmul(&v[1]).matmul(&v[1])
    });
    p.case(dev, "w·(w·x), shared w (accumulating)", &xw, |v| {
        v[1].matmul(&v[1].matmul(&v[0]))
    });
    p.case(dev, "wᵀ·(x·wᵀ), shared w transposed", &xw, |v| {
        v[1].matmul_t(&v[0].matmul_t(&v[1], false, true), true, false)
    });
}

fn linear_cases<T: Float>(dev: Device, p: &mut Parity) {
    let w = randn::<T>(&[5, 13], 11);
    let b = randn::<T>(&[5], 12);
    for x_shape in [&[7, 13][..], &[3, 7, 13], &[2, 3, 7, 13], &[1, 13]] {
        let x = randn::<T>(x_shape, 10);
        let name = format!("linear {x_shape:?} · [5, 13]ᵀ");
        p.case(
            dev,
            &format!("{name} + b"),
            &[x.clone(), w.clone(), b.clone()],
            |v| v[0].linear(&v[1], Some(&v[2])),
        );
        p.case(dev, &name, &[x, w.clone()], |v| v[0].linear(&v[1], None));
    }
    // More than 1024 rows and output columns (the bias-gradient column sum).
    let big = [
        randn::<T>(&[2, 600, 9], 13),
        randn::<T>(&[1030, 9], 14),
        randn::<T>(&[1030], 15),
    ];
    p.case(dev, "linear [2, 600, 9] · [1030, 9]ᵀ + b", &big, |v| {
        v[0].linear(&v[1], Some(&v[2]))
    });
    let one = [
        randn::<T>(&[4, 1], 16),
        randn::<T>(&[1, 1], 17),
        randn::<T>(&[1], 18),
    ];
    p.case(dev, "linear in = out = 1", &one, |v| {
        v[0].linear(&v[1], Some(&v[2]))
    });
    let empty = [
        randn::<T>(&[4, 0], 19),
        randn::<T>(&[3, 0], 20),
        randn::<T>(&[3], 21),
    ];
    p.case(dev, "linear in = 0 + b", &empty, |v| {
        v[0].linear(&v[1], Some(&v[2]))
    });
    p.case(dev, "linear in = 0", &empty[..2], |v| {
        v[0].linear(&v[1], None)
    });
    let sq = [
        randn::<T>(&[3, 7, 13], 22),
        randn::<T>(&[13, 13], 23),
        randn::<T>(&[13], 24),
    ];
    p.case(
        dev,
        "linear twice, shared w and b (accumulating)",
        &sq,
        |v| {
            let h = v[0].linear(&v[1], Some(&v[2]));
            h.linear(&v[1], Some(&v[2])).add(&v[0])
        },
    );
}

fn conv_cases<T: Float>(dev: Device, p: &mut Parity) {
    // (name, x shape, weight shape)
    let shapes: [(&str, [usize; 3], [usize; 3]); 5] = [
        ("conv", [2, 9, 5], [3, 5, 4]),
        ("conv, taps past the start", [3, 3, 5], [3, 5, 4]),
        ("conv, one tap", [2, 7, 3], [1, 3, 6]),
        ("conv, one channel, batch 1", [1, 11, 1], [2, 1, 1]),
        ("conv, 2200 rows", [2, 1100, 3], [2, 3, 6]),
    ];
    for (name, xs, ws) in shapes {
        for dilation in [1, 2] {
            let x = randn::<T>(&xs, 30);
            let w = randn::<T>(&ws, 31);
            let b = randn::<T>(&ws[2..], 32);
            let case = format!("{name} {xs:?} * {ws:?}, dilation {dilation}");
            p.case(
                dev,
                &format!("{case} + b"),
                &[x.clone(), w.clone(), b],
                |v| v[0].causal_conv1d(&v[1], Some(&v[2]), dilation),
            );
            p.case(dev, &case, &[x, w], |v| {
                v[0].causal_conv1d(&v[1], None, dilation)
            });
        }
    }
    let sq = [
        randn::<T>(&[2, 10, 4], 33),
        randn::<T>(&[3, 4, 4], 34),
        randn::<T>(&[4], 35),
    ];
    for dilation in [1, 2] {
        let case = format!("conv twice, shared w and b, dilation {dilation} (accumulating)");
        p.case(dev, &case, &sq, |v| {
            let h = v[0].causal_conv1d(&v[1], Some(&v[2]), dilation);
            h.causal_conv1d(&v[1], Some(&v[2]), dilation).add(&v[0])
        });
    }
}

#[test]
fn matmul_matches_cpu() {
    let Some(dev) = gpu::device("matmul_matches_cpu") else {
        return;
    };
    let mut p = Parity::default();
    matmul_cases::<f32>(dev, &mut p);
    matmul_cases::<f64>(dev, &mut p);
    p.finish("matmul_matches_cpu");
}

#[test]
fn linear_matches_cpu() {
    let Some(dev) = gpu::device("linear_matches_cpu") else {
        return;
    };
    let mut p = Parity::default();
    linear_cases::<f32>(dev, &mut p);
    linear_cases::<f64>(dev, &mut p);
    p.finish("linear_matches_cpu");
}

#[test]
fn causal_conv1d_matches_cpu() {
    let Some(dev) = gpu::device("causal_conv1d_matches_cpu") else {
        return;
    };
    let mut p = Parity::default();
    conv_cases::<f32>(dev, &mut p);
    conv_cases::<f64>(dev, &mut p);
    p.finish("causal_conv1d_matches_cpu");
}
