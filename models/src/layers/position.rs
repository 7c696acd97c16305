//! Sinusoidal embeddings of relative distances (Vaswani et al. 2017; Transformer-XL).

use deq_autograd::{Float, Tensor};

/// `[len, d]` embeddings of distances `0..len`: row `r` is
/// `[sin(r·ω_0), …, sin(r·ω_{d/2-1}), cos(r·ω_0), …]` with `ω_i = 10000^{-2i/d}`.
pub fn sinusoid<T: Float>(len: usize, d: usize) -> Tensor<T> {
    let half = d / 2;
    Tensor::from_fn(&[len, d], |idx| {
        let (r, c) = (idx / d, idx % d);
        let i = if c < half { c } else { c - half };
        let freq = 10000f64.powf(-2.0 * i as f64 / d.max(1) as f64);
        let angle = r as f64 * freq;
        T::from_f64(if c < half { angle.sin() } else { angle.cos() })
    })
}
