use deq_autograd::{Rng, Tape, Tensor};
use std::time::Instant;
fn main() {
    let mut rng = Rng::new(1);
    let x = Tensor::<f32>::randn(
        &[512, 10000],
        std::env::args()
            .nth(1)
            .map(|s| s.parse().unwrap())
            .unwrap_or(1.0),
        &mut rng,
    );
    let targets: Vec<usize> = (0..512).map(|i| i * 7 % 10000).collect();
    for _ in 0..3 {
        let tape = Tape::new();
        let xv = tape.leaf(x.clone());
        let a = Tensor::<f32>::randn(&[512, 64], 1.0, &mut rng);
        let w = Tensor::<f32>::randn(&[10000, 64], 1.0, &mut rng);
        let tm = Instant::now();
        let _y = deq_autograd::matmul_tensor(&a, &w, false, true);
        println!("matmul {:?}", tm.elapsed());
        let t0 = Instant::now();
        let l = xv.cross_entropy(&targets);
        let t1 = Instant::now();
        let g = tape.vjp(&[&l], &[&Tensor::scalar(1.0)], &[&xv]);
        let t2 = Instant::now();
        println!("fwd {:?} bwd {:?} {}", t1 - t0, t2 - t1, g[0].numel());
    }
}
