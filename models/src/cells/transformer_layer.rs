//! The DEQ-Transformer as a language model's implicit layer: the injection and the cell, and
//! the attention memory carried between segments.

use super::{DeqTransformerCell, TransformerConfig};
use crate::layers::Linear;
use crate::params::ParamStore;
use crate::segment::{keep_last, Memory, Segment, SegmentOutput};
use deq_autograd::{Float, Rng, Tensor};
use deq_solvers::implicit::{deq, jacobian_penalty};

/// The injection `u = emb·W_injᵀ + b` (`[B, T, 3d]`, computed once per segment; it enters the
/// QKV projection of every cell application) and the cell. Its memory is the last `mem_len`
/// equilibrium positions `z` (`[B, M, d]`) and their injections `u` (`[B, M, 3d]`), from which
/// the cell computes the memory's keys and values once per segment.
#[derive(Clone, Debug)]
pub struct TransformerLayer {
    inject: Linear,
    cell: DeqTransformerCell,
}

impl TransformerLayer {
    /// Registers `inject.*` and `cell.*`.
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        cfg: &TransformerConfig,
        rng: &mut Rng,
    ) -> Self {
        let d = cfg.d_model;
        let inject = Linear::new(store, "inject", d, 3 * d, true, false, 1.0, rng);
        let cell = DeqTransformerCell::new(store, "cell", cfg, rng);
        TransformerLayer { inject, cell }
    }

    /// Solves one segment: the output is the equilibrium `z*` (`[B, T, d]`).
    pub fn segment<T: Float>(&self, s: Segment<'_, T>) -> SegmentOutput<T> {
        let (p, emb, mem) = (s.p, s.emb, s.mem);
        let (batch, t, d) = (emb.dim(0), emb.dim(1), emb.dim(2));
        let u = self.inject.forward(p, emb);
        let memory = mem.z.as_ref().zip(mem.u.as_ref());
        let klen = t + memory.map_or(0, |(z, _)| z.dim(1));
        let mut rng = s.rng;
        let eff = self.cell.prepare(p, memory, klen, rng.as_deref_mut());
        let step = self.cell.step(batch, rng);
        let z0 = Tensor::zeros_on(&[batch, t, d], emb.value().device());
        let res = deq(&step, &u, &eff, &z0, s.deq_cfg);
        let jacobian = s
            .jac
            .map(|j| jacobian_penalty(&step, &u, &eff, res.z.value(), j.n_vecs, j.rng));
        let m = self.cell.cfg.mem_len;
        let memory = Memory {
            z: keep_last(mem.z.as_ref(), res.z.value(), m),
            u: keep_last(mem.u.as_ref(), u.value(), m),
        };
        SegmentOutput {
            out: res.z,
            stats: res.stats,
            memory,
            jacobian,
        }
    }
}
