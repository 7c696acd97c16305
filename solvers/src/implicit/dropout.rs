//! Variational dropout for implicit layers: one mask per forward pass, shared by every
//! application of the cell inside the solve (a different mask at each iteration would make the
//! fixed point itself random and the solve would not converge).

use deq_autograd::{dropout_mask, Float, Rng, Tensor, Var};

/// A dropout mask drawn once and applied at every cell call of one forward pass.
#[derive(Clone, Debug)]
pub struct VariationalDropout<T: Float> {
    mask: Option<Tensor<T>>,
}

impl<T: Float> VariationalDropout<T> {
    /// Draws a mask of `shape` (for a `[B, T, D]` state use `[B, 1, D]`, so one mask per
    /// sequence and feature is shared over time) with drop probability `p ∈ [0, 1)`.
    /// `p = 0` is the identity.
    pub fn new(shape: &[usize], p: f64, rng: &mut Rng) -> Self {
        VariationalDropout {
            mask: (p > 0.0).then(|| dropout_mask(shape, p, rng)),
        }
    }

    /// The identity (evaluation mode).
    pub fn identity() -> Self {
        VariationalDropout { mask: None }
    }

    /// Applies the fixed mask (broadcast to `v`'s shape).
    pub fn apply(&self, v: &Var<T>) -> Var<T> {
        match &self.mask {
            Some(m) => v.dropout(m),
            None => v.clone(),
        }
    }

    /// The mask, if any.
    pub fn mask(&self) -> Option<&Tensor<T>> {
        self.mask.as_ref()
    }
}
