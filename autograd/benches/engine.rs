//! Engine overheads: a matrix product through `Var::matmul` against faer called directly, and a
//! replayed VJP against re-recording the cell and back-propagating each time.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use deq_autograd::{no_grad, Rng, Tape, Tensor, Var};
use faer::{Accum, MatMut, MatRef, Par};
use std::hint::black_box;

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(10);
    for &(m, k, n) in &[(1024usize, 256usize, 1024usize), (4096, 512, 2048)] {
        let mut rng = Rng::new(1);
        let a = Tensor::<f32>::randn(&[m, k], 1.0, &mut rng);
        let b = Tensor::<f32>::randn(&[k, n], 1.0, &mut rng);
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let name = format!("{m}x{k}x{n}");
        let (va, vb) = (Var::constant(a.clone()), Var::constant(b.clone()));
        group.bench_function(format!("engine/{name}"), |bench| {
            bench.iter(|| no_grad(|| black_box(va.matmul(&vb))))
        });
        let mut out = vec![0f32; m * n];
        group.bench_function(format!("faer/{name}"), |bench| {
            bench.iter(|| {
                // Same work as the engine: a fresh output buffer, then the product.
                out = vec![0f32; m * n];
                faer::linalg::matmul::matmul(
                    MatMut::from_row_major_slice_mut(&mut out, m, n),
                    Accum::Replace,
                    MatRef::from_row_major_slice(a.data(), m, k),
                    MatRef::from_row_major_slice(b.data(), k, n),
                    1.0f32,
                    Par::rayon(0),
                );
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// `f(z) = tanh(z·Wᵀ + x·Uᵀ + b)` at the W1 shape (batch 64, hidden 256, input 256).
fn replayed_vjp(c: &mut Criterion) {
    let (batch, hidden) = (64, 256);
    let mut rng = Rng::new(2);
    let w = Tensor::<f32>::randn(&[hidden, hidden], 0.05, &mut rng);
    let u = Tensor::<f32>::randn(&[hidden, hidden], 0.05, &mut rng);
    let b = Tensor::<f32>::randn(&[hidden], 0.1, &mut rng);
    let x = Tensor::<f32>::randn(&[batch, hidden], 1.0, &mut rng);
    let z = Tensor::<f32>::randn(&[batch, hidden], 1.0, &mut rng);
    let cot = Tensor::<f32>::randn(&[batch, hidden], 1.0, &mut rng);
    let record = || {
        let tape = Tape::new();
        let (zv, xv) = (tape.leaf(z.clone()), tape.leaf(x.clone()));
        let (wv, uv, bv) = (
            tape.leaf(w.clone()),
            tape.leaf(u.clone()),
            tape.leaf(b.clone()),
        );
        let y = zv.linear(&wv, None).add(&xv.linear(&uv, Some(&bv))).tanh();
        (tape, zv, y)
    };
    let mut group = c.benchmark_group("tanh_cell_vjp_z");
    let (tape, zv, y) = record();
    group.bench_function("replayed", |bench| {
        bench.iter(|| black_box(tape.vjp(&[&y], &[&cot], &[&zv])))
    });
    group.bench_function("rerecord_then_backprop", |bench| {
        bench.iter(|| {
            let (tape, zv, y) = record();
            black_box(tape.vjp(&[&y], &[&cot], &[&zv]))
        })
    });
    group.finish();
}

criterion_group!(benches, matmul, replayed_vjp);
criterion_main!(benches);
