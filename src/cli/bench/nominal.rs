//! Nominal FLOPs of the workloads, counted once by formula from BENCH.md's shapes (dense
//! products only, attention over the full `T × T`), never from the engine's counters: work the
//! engine skips (masked blocks, frozen samples) then shows as speed.
//!
//! Per application of the W2 block on `[B, T, D]` (`R = B·T` rows, FFN width `F`, `H` heads
//! of `d_h`), a product `m×k·k×n` being `2mkn` FLOPs:
//! - forward: `2R(3D² + D² + 2DF)` in the four linear layers, `2·2BHT²d_h` in `QKᵀ` and `AV`;
//! - a VJP with respect to the input only: the same linear products (`G·W`) and four
//!   attention products (`∂Q, ∂K, ∂V, ∂A`);
//! - a full VJP: that plus the weight gradients (`Gᵀ·X`, the linear forward FLOPs again).

const B: f64 = 8.0;
const T: f64 = 128.0;
const D: f64 = 256.0;
const F: f64 = 1024.0;
const VOCAB: f64 = 10000.0;

fn rows() -> f64 {
    B * T
}

fn linear_fwd() -> f64 {
    2.0 * rows() * (3.0 * D * D + D * D + 2.0 * D * F)
}

/// One attention product over all heads: `2·B·H·T²·d_h = 2·B·T²·D`.
fn attention_product() -> f64 {
    2.0 * B * T * T * D
}

/// GFLOP of one block application.
pub fn block_fwd() -> f64 {
    (linear_fwd() + 2.0 * attention_product()) / 1e9
}

/// GFLOP of one input-only VJP of the block.
pub fn block_vjp_input() -> f64 {
    (linear_fwd() + 4.0 * attention_product()) / 1e9
}

/// GFLOP of one full VJP of the block (input and weights).
pub fn block_vjp_full() -> f64 {
    block_vjp_input() + linear_fwd() / 1e9
}

/// The injection `x = emb·Wᵀ + b` on `[B, T, D]`: forward, and its weight gradient.
fn injection() -> f64 {
    2.0 * rows() * D * D / 1e9
}

/// W2 DEQ with `iters` Broyden iterations each way: `iters + 1` unrecorded applications and
/// one recorded, `iters + 1` input-only VJPs and one full VJP, plus the injection.
pub fn w2_deq(iters: usize) -> f64 {
    let n = iters as f64 + 1.0;
    (n + 1.0) * block_fwd() + n * block_vjp_input() + block_vjp_full() + 2.0 * injection()
}

/// W2 unrolled `depth` times with backprop, plus the injection.
pub fn w2_unrolled(depth: usize) -> f64 {
    let n = depth as f64;
    n * (block_fwd() + block_vjp_full()) + 2.0 * injection()
}

/// W3: W2's DEQ plus the tied output layer (`[R, D]·[D, V]` forward, and both gradients).
pub fn w3(iters: usize) -> f64 {
    w2_deq(iters) + 3.0 * 2.0 * rows() * D * VOCAB / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w2_is_about_67_gflop_and_unrolled_84() {
        assert!((w2_deq(16) - 67.1).abs() < 0.5, "{}", w2_deq(16));
        assert!((w2_unrolled(16) - 83.8).abs() < 1.0, "{}", w2_unrolled(16));
    }
}
