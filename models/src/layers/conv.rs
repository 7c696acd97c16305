//! The weight of a causal convolution, optionally weight-normalised.

use crate::params::{ParamId, ParamStore};
use deq_autograd::{Float, Rng, Tensor, Var};

/// A kernel `[k, in, out]` (as [`Var::causal_conv1d`] takes it), drawn uniformly in
/// `±bound`. Under weight normalisation (Salimans & Kingma 2016; the reference applies
/// PyTorch's `weight_norm(dim=0)` to its `[out, in, k]` Conv1d weights) the kernel is
/// `W[:, :, o] = g_o · V[:, :, o] / ‖V[:, :, o]‖`, one gain per output channel, each norm over
/// the kernel taps and input channels; the gains start at the norms, so `W = V` at
/// initialisation.
#[derive(Clone, Debug)]
pub struct ConvWeight {
    v: ParamId,
    g: Option<ParamId>,
    out: usize,
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
        let [k, inp, out] = shape;
        let v_t = Tensor::<T>::rand_uniform(&shape, -bound, bound, rng);
        let g = weight_norm.then(|| {
            let norms = Tensor::from_fn(&[out], |o| {
                let sq: f64 = (0..k * inp)
                    .map(|r| v_t.data()[r * out + o].to_f64().powi(2))
                    .sum();
                T::from_f64(sq.sqrt())
            });
            store.add(&format!("{name}.gain"), norms)
        });
        let v = store.add(&format!("{name}.weight"), v_t);
        ConvWeight { v, g, out }
    }

    /// The effective kernel (recorded through the gains and directions when they are leaves).
    pub fn weight<T: Float>(&self, p: &[Var<T>]) -> Var<T> {
        let v = &p[self.v.0];
        match self.g {
            None => v.clone(),
            Some(g) => {
                let norm = v.mul(v).sum_axis(0, true).sum_axis(1, true).sqrt();
                let scale = p[g.0].reshape(&[1, 1, self.out]).div(&norm);
                v.mul(&scale)
            }
        }
    }
}
