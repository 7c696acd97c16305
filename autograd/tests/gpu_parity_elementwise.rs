//! GPU parity of the element-wise ops: every unary function and its VJP (see `gpu/mod.rs`).
// Without the `cuda` feature there is no GPU code to compare with the CPU.
#![cfg(feature = "cuda")]

mod gpu;

use deq_autograd::{Device, Float};
use gpu::{randn, uniform, Parity};

fn unary_cases<T: Float>(dev: Device, p: &mut Parity) {
    let shape = [3, 37, 5];
    let x = randn::<T>(&shape, 1);
    let pos = uniform::<T>(&shape, 0.2, 3.0, 2);
    p.case(dev, "neg", std::slice::from_ref(&x), |v| v[0].neg());
    p.case(dev, "exp", std::slice::from_ref(&x), |v| v[0].exp());
    p.case(dev, "log", std::slice::from_ref(&pos), |v| v[0].log());
    p.case(dev, "tanh", std::slice::from_ref(&x), |v| v[0].tanh());
    p.case(dev, "sigmoid", std::slice::from_ref(&x), |v| v[0].sigmoid());
    p.case(dev, "relu", std::slice::from_ref(&x), |v| v[0].relu());
    p.case(dev, "gelu", std::slice::from_ref(&x), |v| v[0].gelu());
    p.case(dev, "sqrt", std::slice::from_ref(&pos), |v| v[0].sqrt());
    p.case(dev, "powi(3)", std::slice::from_ref(&x), |v| v[0].powi(3));
    p.case(dev, "powi(-2)", std::slice::from_ref(&pos), |v| {
        v[0].powi(-2)
    });
    p.case(dev, "tanh(tanh) (chained, accumulating)", &[x], |v| {
        let t = v[0].tanh();
        t.tanh().add(&t)
    });
}

#[test]
fn unary_ops_match_cpu() {
    let Some(dev) = gpu::device("unary_ops_match_cpu") else {
        return;
    };
    let mut p = Parity::default();
    unary_cases::<f32>(dev, &mut p);
    unary_cases::<f64>(dev, &mut p);
    p.finish("unary_ops_match_cpu");
}
