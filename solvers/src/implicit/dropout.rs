//! Variational dropout for implicit layers: one mask per forward pass, shared by every
//! application of the cell inside the solve (a different mask at each iteration would make the
//! fixed point itself random and the solve would not converge).

use deq_autograd::{dropout_mask, Float, Rng, Tensor, Var};
use std::cell::RefCell;

/// A dropout mask drawn once and applied at every cell call of one forward pass.
#[derive(Clone, Debug)]
pub struct VariationalDropout<T: Float> {
    mask: Option<Tensor<T>>,
    /// The mask on the device of the last state it was applied to.
    on_device: RefCell<Option<Tensor<T>>>,
}

impl<T: Float> VariationalDropout<T> {
    /// Draws a mask of `shape` (for a `[B, T, D]` state use `[B, 1, D]`, so one mask per
    /// sequence and feature is shared over time) with drop probability `p ∈ [0, 1)`.
    /// `p = 0` is the identity.
    pub fn new(shape: &[usize], p: f64, rng: &mut Rng) -> Self {
        VariationalDropout {
            mask: (p > 0.0).then(|| dropout_mask(shape, p, rng)),
            on_device: RefCell::new(None),
        }
    }

    /// The identity (evaluation mode).
    pub fn identity() -> Self {
        VariationalDropout {
            mask: None,
            on_device: RefCell::new(None),
        }
    }

    /// Applies the fixed mask (broadcast to `v`'s shape). On a device the mask is uploaded
    /// once and the device copy reused by every later call.
    pub fn apply(&self, v: &Var<T>) -> Var<T> {
        let Some(m) = &self.mask else {
            return v.clone();
        };
        let device = v.value().device();
        if m.device() == device {
            return v.dropout(m);
        }
        let mut cached = self.on_device.borrow_mut();
        if cached.as_ref().is_none_or(|c| c.device() != device) {
            *cached = Some(m.to_device(device).expect("the state's device is open"));
        }
        v.dropout(cached.as_ref().expect("just set"))
    }

    /// The mask, if any.
    pub fn mask(&self) -> Option<&Tensor<T>> {
        self.mask.as_ref()
    }
}
