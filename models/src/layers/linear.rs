//! A linear layer `y = x·Wᵀ + b`, optionally with weight normalisation.
//!
//! Weight normalisation ([`super::weight_norm`]) reparametrises each output row as
//! `W_i = g_i · v_i / ‖v_i‖`, computed once per forward pass ([`Linear::weight`]).

use super::weight_norm;
use crate::params::{ParamId, ParamStore};
use deq_autograd::{Float, Rng, Tensor, Var};

/// Parameters of one linear layer.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, inp]` weight (the direction `v` under weight normalisation).
    pub w: ParamId,
    /// `[out]` gains `g` under weight normalisation.
    pub g: Option<ParamId>,
    /// `[out]` bias.
    pub b: Option<ParamId>,
    /// Input width.
    pub inp: usize,
    /// Output width.
    pub out: usize,
}

impl Linear {
    /// Registers `name.weight` (and `name.bias`, `name.gain`) with PyTorch-style uniform
    /// initialisation `±scale/√inp`; the gain starts at the rows' norms so the initial weight
    /// equals the drawn one.
    #[allow(clippy::too_many_arguments)]
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        inp: usize,
        out: usize,
        bias: bool,
        weight_norm: bool,
        scale: f64,
        rng: &mut Rng,
    ) -> Self {
        let bound = scale / (inp.max(1) as f64).sqrt();
        let w_t = Tensor::<T>::rand_uniform(&[out, inp], -bound, bound, rng);
        let g = weight_norm
            .then(|| store.add(&format!("{name}.gain"), weight_norm::channel_norms(&w_t, 0)));
        let w = store.add(&format!("{name}.weight"), w_t);
        let b = bias.then(|| store.uniform(&format!("{name}.bias"), &[out], bound, rng));
        Linear { w, g, b, inp, out }
    }

    /// The effective weight: `g ⊙ v/‖v‖` row-wise under weight normalisation, else `W`.
    pub fn weight<T: Float>(&self, p: &[Var<T>]) -> Var<T> {
        let v = &p[self.w.0];
        match self.g {
            None => v.clone(),
            Some(g) => weight_norm::normalised(v, &p[g.0], 0),
        }
    }

    /// The bias variable, if any.
    pub fn bias<'a, T: Float>(&self, p: &'a [Var<T>]) -> Option<&'a Var<T>> {
        self.b.map(|b| &p[b.0])
    }

    /// `x·Wᵀ + b` with the parameters looked up in `p`.
    pub fn forward<T: Float>(&self, p: &[Var<T>], x: &Var<T>) -> Var<T> {
        x.linear(&self.weight(p), self.bias(p))
    }
}
