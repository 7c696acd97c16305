//! Weight normalisation (Salimans & Kingma 2016), written once for every layer that uses it:
//! a weight `v` with one gain per channel along axis `a` is used as
//! `W = g ⊙ v / ‖v‖`, each norm taken over all of `v`'s other axes. The gains start at the
//! norms of the drawn `v`, so `W = v` at initialisation. Layers compute `W` once per forward
//! pass and pass it into the DEQ cell, so solver iterations do not recompute it (as
//! locuslab/deq's `reset()` does).

use deq_autograd::{Float, Tensor, Var};

/// The initial gains: `‖v‖` per channel along `axis` (`[v.shape()[axis]]`), summed in f64.
pub fn channel_norms<T: Float>(v: &Tensor<T>, axis: usize) -> Tensor<T> {
    let shape = v.shape();
    let channels = shape[axis];
    let stride: usize = shape[axis + 1..].iter().product();
    let mut squares = vec![0.0f64; channels];
    for (i, x) in v.data().iter().enumerate() {
        squares[(i / stride) % channels] += x.to_f64().powi(2);
    }
    Tensor::from_fn(&[channels], |c| T::from_f64(squares[c].sqrt()))
}

/// `g ⊙ v / ‖v‖` with `g` the `[channels]` gains along `axis` (recorded through both).
pub fn normalised<T: Float>(v: &Var<T>, g: &Var<T>, axis: usize) -> Var<T> {
    let mut squares = v.mul(v);
    for other in (0..v.shape().len()).filter(|&a| a != axis) {
        squares = squares.sum_axis(other, true);
    }
    let norm = squares.sqrt();
    let scale = g.reshape(norm.shape()).div(&norm);
    v.mul(&scale)
}
