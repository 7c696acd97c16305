use deq_autograd::{no_grad, Rng, Tensor, Var};
use std::time::Instant;
fn t<R>(name: &str, n: usize, f: impl Fn() -> R) {
    f();
    let s = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    println!(
        "{name:<24} {:>9.1} µs",
        s.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
fn main() {
    let mut rng = Rng::new(1);
    let z = Var::constant(Tensor::<f32>::randn(&[64, 256], 1.0, &mut rng));
    let w = Var::constant(Tensor::<f32>::randn(&[256, 256], 0.05, &mut rng));
    let b = Var::constant(Tensor::<f32>::randn(&[64, 256], 0.05, &mut rng));
    no_grad(|| {
        t("linear 64x256x256", 200, || z.linear(&w, None));
        t("add", 200, || z.add(&b));
        t("tanh", 200, || z.tanh());
        t("cell", 200, || z.linear(&w, None).add(&b).tanh());
        t("alloc 64k f32", 200, || vec![0f32; 16384]);
    });
}
