//! GPU parity of the binary ops with broadcasting, the reductions and the shape ops, forward
//! and VJP (see `gpu/mod.rs`). The shapes reach every kernel path: same shapes, an operand
//! broadcast in every position (reduced along inner axes: a block per gradient element; along
//! outer axes: a thread per element, split into chunks when few elements sum many values),
//! reductions over rows and columns longer than a block and split into chunks, maxima with
//! ties, and inputs used twice so that gradients accumulate.
// Without the `cuda` feature there is no GPU code to compare with the CPU.
#![cfg(feature = "cuda")]

mod gpu;

use deq_autograd::{Device, Float, Tape, Tensor, Var};
use gpu::{randn, uniform, Parity};
use std::slice::from_ref;

/// Values in {0, 1, …, levels − 1}: many exact ties for the maxima.
fn ties<T: Float>(shape: &[usize], levels: usize) -> Tensor<T> {
    Tensor::from_fn(shape, |i| T::from_f64(((i * 7919 + 13) % levels) as f64))
}

fn binary_cases<T: Float>(dev: Device, p: &mut Parity) {
    type Op<T> = fn(&Var<T>, &Var<T>) -> Var<T>;
    let ops: [(&str, Op<T>); 4] = [
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(b)),
    ];
    // (a shape, b shape): b is always positive, so division is safe.
    let shapes: &[(&[usize], &[usize])] = &[
        (&[3, 37, 5], &[3, 37, 5]),
        (&[3, 1, 5], &[3, 1, 5]),
        (&[3, 37, 5], &[5]),
        (&[3, 37, 5], &[37, 1]),
        (&[3, 37, 5], &[3, 1, 5]),
        (&[3, 37, 5], &[1, 37, 1]),
        (&[3, 37, 5], &[3, 1, 1]),
        (&[3, 37, 5], &[]),
        (&[5], &[3, 37, 5]),
        (&[3, 1, 5], &[1, 37, 1]),
        (&[37, 1], &[3, 1, 5]),
        (&[40, 7], &[40, 1]),
        (&[2, 1500], &[2, 1]),
        (&[3, 4100], &[1, 4100]),
        (&[300, 1100], &[1100]),
        (&[4100, 3], &[3]),
        (&[2, 2, 2, 2, 2, 2, 3], &[3]),
        (&[2, 1, 2, 1, 2, 1, 2, 3], &[2, 1, 1, 3]),
    ];
    for (name, op) in ops {
        for (i, &(sa, sb)) in shapes.iter().enumerate() {
            let a = randn::<T>(sa, 10 + i as u64);
            let b = uniform::<T>(sb, 0.5, 2.0, 100 + i as u64);
            p.case(dev, &format!("{name} {sa:?} {sb:?}"), &[a, b], |v| {
                op(&v[0], &v[1])
            });
        }
    }
    // Accumulation: an operand used twice, through every VJP kernel path.
    let x = randn::<T>(&[3, 37, 5], 1);
    let cases: &[(&str, &[usize])] = &[
        ("same shape", &[3, 37, 5]),
        ("inner reduced (rows)", &[3, 1, 1]),
        ("outer reduced (chunked)", &[5]),
        ("middle reduced", &[1, 37, 1]),
        ("scalar", &[]),
    ];
    for &(what, sb) in cases {
        let b = uniform::<T>(sb, 0.5, 2.0, 7);
        p.case(
            dev,
            &format!("(x·b + b) / b, b {what}"),
            &[x.clone(), b],
            |v| v[0].mul(&v[1]).add(&v[1]).div(&v[1]),
        );
    }
    p.case(dev, "x·x − x (same input twice)", from_ref(&x), |v| {
        v[0].mul(&v[0]).sub(&v[0])
    });
    let wide = randn::<T>(&[4100, 3], 2);
    let bias = randn::<T>(&[3], 3);
    p.case(
        dev,
        "(x + b)·b, b [3] over 4100 rows",
        &[wide, bias],
        |v| v[0].add(&v[1]).mul(&v[1]),
    );
}

fn scalar_cases<T: Float>(dev: Device, p: &mut Parity) {
    let x = randn::<T>(&[3, 37, 5], 4);
    p.case(dev, "affine(2.5, -1)", from_ref(&x), |v| {
        v[0].affine(2.5, -1.0)
    });
    p.case(dev, "add_scalar(0.3)", from_ref(&x), |v| {
        v[0].add_scalar(0.3)
    });
    p.case(dev, "mul_scalar(-1.7)", from_ref(&x), |v| {
        v[0].mul_scalar(-1.7)
    });
    p.case(dev, "affine(1, 0.5) + x (accumulating)", &[x], |v| {
        v[0].affine(1.0, 0.5).add(&v[0])
    });
}

fn reduce_cases<T: Float>(dev: Device, p: &mut Parity) {
    let shape = [3, 37, 5];
    let x = randn::<T>(&shape, 5);
    for axis in 0..3 {
        for keepdim in [false, true] {
            p.case(
                dev,
                &format!("sum_axis({axis}, {keepdim})"),
                from_ref(&x),
                |v| v[0].sum_axis(axis, keepdim),
            );
            p.case(
                dev,
                &format!("mean_axis({axis}, {keepdim})"),
                from_ref(&x),
                |v| v[0].mean_axis(axis, keepdim),
            );
            p.case(
                dev,
                &format!("max_axis({axis}, {keepdim})"),
                from_ref(&x),
                |v| v[0].max_axis(axis, keepdim),
            );
        }
    }
    p.case(dev, "sum_axes([0, 2])", from_ref(&x), |v| {
        v[0].sum_axes(&[0, 2], false)
    });
    p.case(dev, "mean_axes([2, 0], keepdim)", from_ref(&x), |v| {
        v[0].mean_axes(&[2, 0], true)
    });
    p.case(dev, "sum_all", from_ref(&x), |v| v[0].sum_all());
    p.case(dev, "mean_all", from_ref(&x), |v| v[0].mean_all());
    p.case(dev, "max_all", from_ref(&x), |v| v[0].max_all());
    // Sizes that split the axis into chunks (rows longer than a block, long columns).
    let long: &[(&[usize], usize)] = &[
        (&[3, 5000], 1),
        (&[2, 12000], 1),
        (&[5000, 3], 0),
        (&[2, 4100, 7], 1),
        (&[1, 1, 9000], 2),
        (&[70, 1030], 1),
    ];
    for (i, &(s, axis)) in long.iter().enumerate() {
        let x = uniform::<T>(s, -1.0, 2.0, 20 + i as u64);
        p.case(
            dev,
            &format!("sum_axis({axis}) of {s:?}"),
            from_ref(&x),
            |v| v[0].sum_axis(axis, false),
        );
        p.case(
            dev,
            &format!("mean_axis({axis}) of {s:?}"),
            from_ref(&x),
            |v| v[0].mean_axis(axis, true),
        );
        p.case(dev, &format!("max_axis({axis}) of {s:?}"), &[x], |v| {
            v[0].max_axis(axis, false)
        });
    }
    let big = uniform::<T>(&[120, 90], -1.0, 2.0, 30);
    p.case(dev, "sum_all of [120, 90]", from_ref(&big), |v| {
        v[0].sum_all()
    });
    p.case(dev, "mean_all of [120, 90]", from_ref(&big), |v| {
        v[0].mean_all()
    });
    p.case(dev, "max_all of [120, 90]", &[big], |v| v[0].max_all());
    // Ties: the gradient goes to the first maximum, also across chunks and warps.
    let tie_shapes: &[(&[usize], usize)] = &[
        (&[3, 37, 5], 0),
        (&[3, 37, 5], 1),
        (&[3, 37, 5], 2),
        (&[3, 9000], 1),
        (&[9000, 2], 0),
    ];
    for &(s, axis) in tie_shapes {
        let t = ties::<T>(s, 13);
        p.case(
            dev,
            &format!("max_axis({axis}) of {s:?}, ties"),
            &[t],
            |v| v[0].max_axis(axis, true),
        );
    }
    p.case(
        dev,
        "max_all of [120, 90], ties",
        &[ties::<T>(&[120, 90], 13)],
        |v| v[0].max_all(),
    );
    p.case(
        dev,
        "max_all, all equal",
        &[Tensor::<T>::ones(&[50, 60])],
        |v| v[0].max_all(),
    );
    // Accumulation into the reduced input.
    p.case(dev, "sum_axis(1, keep)·x", from_ref(&x), |v| {
        v[0].sum_axis(1, true).mul(&v[0])
    });
    p.case(dev, "max_axis(1, keep)·x", from_ref(&x), |v| {
        v[0].max_axis(1, true).mul(&v[0])
    });
    p.case(dev, "max_all + sum_all", &[x], |v| {
        v[0].max_all().add(&v[0].sum_all())
    });
}

fn shape_cases<T: Float>(dev: Device, p: &mut Parity) {
    let x = randn::<T>(&[3, 37, 5], 6);
    let w = randn::<T>(&[37, 15], 7);
    p.case(dev, "reshape · w", &[x.clone(), w], |v| {
        v[0].reshape(&[37, 15]).mul(&v[1])
    });
    p.case(dev, "reshape twice + x (accumulating)", from_ref(&x), |v| {
        v[0].reshape(&[15, 37]).reshape(&[3, 37, 5]).add(&v[0])
    });
    let y = randn::<T>(&[2, 3, 4, 5], 8);
    for perm in [
        [3, 1, 0, 2],
        [0, 2, 1, 3],
        [0, 1, 2, 3],
        [1, 0, 3, 2],
        [3, 2, 1, 0],
    ] {
        p.case(dev, &format!("permute({perm:?})"), from_ref(&y), |v| {
            v[0].permute(&perm)
        });
    }
    let z = randn::<T>(&[2, 1, 3, 1, 2, 3, 2], 9);
    p.case(dev, "permute of 7 axes with size-1 axes", &[z], |v| {
        v[0].permute(&[1, 0, 3, 2, 4, 5, 6])
    });
    p.case(dev, "transpose(0, 2)", from_ref(&x), |v| {
        v[0].transpose(0, 2)
    });
    p.case(dev, "transpose(1, 2)", from_ref(&x), |v| {
        v[0].transpose(1, 2)
    });
    p.case(
        dev,
        "permute there and back + x (accumulating)",
        from_ref(&x),
        |v| v[0].permute(&[2, 0, 1]).permute(&[1, 2, 0]).add(&v[0]),
    );
    for (axis, start, len) in [(0, 1, 2), (1, 3, 20), (2, 0, 5), (2, 4, 1), (1, 36, 0)] {
        p.case(
            dev,
            &format!("narrow({axis}, {start}, {len})"),
            from_ref(&x),
            |v| v[0].narrow(axis, start, len),
        );
    }
    p.case(
        dev,
        "narrow + narrow (overlapping, accumulating)",
        from_ref(&x),
        |v| v[0].narrow(1, 3, 20).add(&v[0].narrow(1, 10, 20)),
    );
    let long = randn::<T>(&[2, 3000], 10);
    p.case(dev, "narrow(1, 100, 2500) of a long row", &[long], |v| {
        v[0].narrow(1, 100, 2500)
    });
    for axis in 0..3 {
        let mut s1 = vec![3, 37, 5];
        let mut s2 = s1.clone();
        s1[axis] = 2;
        s2[axis] = 1;
        let (a, b) = (randn::<T>(&s1, 11), randn::<T>(&s2, 12));
        p.case(
            dev,
            &format!("concat(axis {axis})"),
            &[x.clone(), a, b],
            |v| Var::concat(&[&v[0], &v[1], &v[2]], axis),
        );
    }
    let c = randn::<T>(&[3, 4, 5], 13);
    p.case(
        dev,
        "concat(x, c, x) (accumulating)",
        &[x.clone(), c],
        |v| Var::concat(&[&v[0], &v[1], &v[0]], 1),
    );
    for (axis, before, after, value) in [
        (0, 1, 2, 0.0),
        (1, 3, 0, 1.5),
        (2, 0, 4, -2.0),
        (2, 2, 2, 0.25),
    ] {
        p.case(
            dev,
            &format!("pad({axis}, {before}, {after}, {value})"),
            from_ref(&x),
            |v| v[0].pad(axis, before, after, value),
        );
    }
    p.case(dev, "pad then narrow + x (accumulating)", &[x], |v| {
        v[0].pad(1, 2, 3, 0.5).narrow(1, 2, 37).add(&v[0])
    });
    // Transformer-XL's relative shift (its own device kernel): no memory, memory, one row.
    for (s, seed) in [([2, 3, 5, 5], 14), ([2, 2, 4, 9], 15), ([1, 1, 1, 3], 16)] {
        let scores = randn::<T>(&s, seed);
        p.case(dev, &format!("rel_shift of {s:?}"), &[scores], |v| {
            v[0].rel_shift()
        });
    }
    let scores = randn::<T>(&[2, 2, 4, 7], 17);
    p.case(dev, "rel_shift + x (accumulating)", &[scores], |v| {
        v[0].rel_shift().add(&v[0])
    });
}

#[test]
fn binary_ops_match_cpu() {
    let Some(dev) = gpu::device("binary_ops_match_cpu") else {
        return;
    };
    let mut p = Parity::default();
    binary_cases::<f32>(dev, &mut p);
    binary_cases::<f64>(dev, &mut p);
    scalar_cases::<f32>(dev, &mut p);
    scalar_cases::<f64>(dev, &mut p);
    p.finish("binary_ops_match_cpu");
}

#[test]
fn reductions_match_cpu() {
    let Some(dev) = gpu::device("reductions_match_cpu") else {
        return;
    };
    let mut p = Parity::default();
    reduce_cases::<f32>(dev, &mut p);
    reduce_cases::<f64>(dev, &mut p);
    p.finish("reductions_match_cpu");
}

#[test]
fn shape_ops_match_cpu() {
    let Some(dev) = gpu::device("shape_ops_match_cpu") else {
        return;
    };
    let mut p = Parity::default();
    shape_cases::<f32>(dev, &mut p);
    shape_cases::<f64>(dev, &mut p);
    p.finish("shape_ops_match_cpu");
}

/// Output and gradient of `f` with a ones cotangent, on `device`.
fn max_with_grad(
    x: &Tensor<f32>,
    device: Device,
    f: fn(&Var<f32>) -> Var<f32>,
) -> (Vec<f32>, Vec<f32>) {
    let tape = Tape::new();
    let leaf = tape.leaf(x.to_device(device).expect("device open"));
    let y = f(&leaf);
    let ones = Tensor::<f32>::ones(y.shape())
        .to_device(device)
        .expect("device open");
    let g = tape.vjp(&[&y], &[&ones], &[&leaf]);
    (y.value().to_vec(), g[0].to_vec())
}

/// Bitwise-equal values, NaN equal to NaN.
fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

#[test]
fn max_follows_the_cpu_nan_rule() {
    let Some(dev) = gpu::device("max_follows_the_cpu_nan_rule") else {
        return;
    };
    // The CPU keeps a NaN first entry and never picks a later NaN; the gradient follows.
    let nan = f32::NAN;
    let mut failures = Vec::new();
    type Case = (&'static str, Vec<usize>, fn(&Var<f32>) -> Var<f32>);
    let cases: Vec<Case> = vec![
        ("rows", vec![4, 10], |v| v.max_axis(1, false)),
        ("rows, chunked", vec![2, 9000], |v| v.max_axis(1, false)),
        ("columns", vec![10, 4], |v| v.max_axis(0, false)),
        ("all", vec![6, 7], |v| v.max_all()),
        ("all, chunked", vec![100, 90], |v| v.max_all()),
    ];
    for (name, shape, f) in cases {
        let n: usize = shape.iter().product();
        let base: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32).collect();
        // First entry NaN, or NaNs only later (with a NaN right after the first entry).
        for first_nan in [true, false] {
            let mut v = base.clone();
            if first_nan {
                v[0] = nan;
            }
            for i in (1..n).step_by(5) {
                v[i] = nan;
            }
            let x = Tensor::from_vec(v, &shape);
            let cpu = max_with_grad(&x, Device::Cpu, f);
            let gpu = max_with_grad(&x, dev, f);
            if !same(&cpu.0, &gpu.0) || !same(&cpu.1, &gpu.1) {
                failures.push(format!("{name} (first NaN: {first_nan})"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "max differs from the CPU with NaNs: {failures:?}"
    );
}
