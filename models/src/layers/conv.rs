//! The weight of a causal convolution, optionally weight-normalised.

use super::weight_norm;
use crate::params::{ParamId, ParamStore};
use deq_autograd::{Float, Rng, Tensor, Var};

/// A kernel `[k, in, out]` (as [`Var::causal_conv1d`] takes it), drawn uniformly in
/// `±bound`. Under weight normalisation ([`super::weight_norm`]; the reference applies
/// PyTorch's `weight_norm(dim=0)` to its `[out, in, k]` Conv1d weights) the kernel is
/// `W[:, :, o] = g_o · V[:, :, o] / ‖V[:, :, o]‖`, one gain per output channel, each norm over
/// the kernel taps and input channels.
#[derive(Clone, Debug)]
pub struct ConvWeight {
    v: ParamId,
    g: Option<ParamId>,
}

impl ConvWeight {
    /// Registers `name.weight` (and `name.gain` under weight normalisation).
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        shape: [usize; 3],
        bound: f64,
        weight_norm: bool,
        rng: &mut Rng,
    ) -> Self {
        let v_t = Tensor::<T>::rand_uniform(&shape, -bound, bound, rng);
        let g = weight_norm
            .then(|| store.add(&format!("{name}.gain"), weight_norm::channel_norms(&v_t, 2)));
        let v = store.add(&format!("{name}.weight"), v_t);
        ConvWeight { v, g }
    }

    /// The effective kernel (recorded through the gains and directions when they are leaves).
    pub fn weight<T: Float>(&self, p: &[Var<T>]) -> Var<T> {
        let v = &p[self.v.0];
        match self.g {
            None => v.clone(),
            Some(g) => weight_norm::normalised(v, &p[g.0], 2),
        }
    }
}
