//! The DEQ-TrellisNet as a language model's implicit layer: the injection and the cell, and
//! the last position carried between segments.

use super::{TrellisConfig, TrellisNetCell};
use crate::layers::ConvWeight;
use crate::params::{ParamId, ParamStore};
use crate::segment::{last_position, Memory, Segment, SegmentOutput};
use deq_autograd::{Float, Rng, Tensor, Var};
use deq_solvers::implicit::{deq, jacobian_penalty};

/// The injection, a kernel-2 causal convolution of the embedding (`[B, T, 4H]`, computed once
/// per segment, optionally weight-normalised), and the cell. Its memory is the last state `z`
/// (`[B, 1, 2H]`: the history of the cell's convolution) and the last embedding `u`
/// (`[B, 1, d]`: the history of the injection's). The output is the last `d_embed` channels of
/// the equilibrium's `h`.
#[derive(Clone, Debug)]
pub struct TrellisLayer {
    inject_w: ConvWeight,
    inject_b: ParamId,
    cell: TrellisNetCell,
}

impl TrellisLayer {
    /// Registers `inject.*` and `cell.*` for an embedding of width `d_embed`.
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        d_embed: usize,
        cfg: &TrellisConfig,
        rng: &mut Rng,
    ) -> Self {
        let (d, h) = (d_embed, cfg.hidden);
        let bound = 1.0 / (2.0 * d as f64).sqrt();
        let shape = [2, d, 4 * h];
        let inject_w = ConvWeight::new(store, "inject", shape, bound, cfg.weight_norm, rng);
        let inject_b = store.uniform("inject.bias", &[4 * h], bound, rng);
        let cell = TrellisNetCell::new(store, "cell", cfg, rng);
        TrellisLayer {
            inject_w,
            inject_b,
            cell,
        }
    }

    /// Solves one segment.
    pub fn segment<T: Float>(&self, s: Segment<'_, T>) -> SegmentOutput<T> {
        let (p, emb, mem) = (s.p, s.emb, s.mem);
        let (batch, t, d) = (emb.dim(0), emb.dim(1), emb.dim(2));
        let device = emb.value().device();
        let hist = match &mem.u {
            Some(m) => Var::constant(m.clone()),
            None => Var::constant(Tensor::zeros_on(&[batch, 1, d], device)),
        };
        let emb_ext = Var::concat(&[&hist, emb], 1);
        let u = emb_ext
            .causal_conv1d(&self.inject_w.weight(p), Some(&p[self.inject_b.0]), 1)
            .narrow(1, 1, t);
        let mut rng = s.rng;
        let eff = self.cell.prepare(p, rng.as_deref_mut());
        let h = self.cell.cfg.hidden;
        // No memory yet: a zero history on the parameters' device.
        let history = mem
            .z
            .clone()
            .unwrap_or_else(|| Tensor::zeros_on(&[batch, 1, 2 * h], device));
        let step = self.cell.step(batch, Some(history), rng);
        let z0 = Tensor::zeros_on(&[batch, t, 2 * h], device);
        let res = deq(&step, &u, &eff, &z0, s.deq_cfg);
        let jacobian = s
            .jac
            .map(|j| jacobian_penalty(&step, &u, &eff, res.z.value(), j.n_vecs, j.rng));
        let memory = Memory {
            z: Some(last_position(res.z.value())),
            u: Some(last_position(emb.value())),
        };
        SegmentOutput {
            out: res.z.narrow(2, h - d, d),
            stats: res.stats,
            memory,
            jacobian,
        }
    }
}
