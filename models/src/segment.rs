//! What a language model's implicit layer takes and gives for one segment, whatever its cell:
//! the embedded tokens and the memory of the previous segment in; the output, the solve's
//! statistics, the memory for the next segment and (when asked) the Jacobian penalty out.
//! Each cell's layer ([`crate::cells::TransformerLayer`], [`crate::cells::TrellisLayer`])
//! owns its injection and decides what its memory holds.

use deq_autograd::{Float, Rng, Tensor, Var};
use deq_solvers::implicit::{DeqConfig, DeqStats};

/// What a forward pass carries to the next segment (detached). The cell's layer says what the
/// two tensors hold: for the DEQ-Transformer `z` is the last `mem_len` equilibrium positions
/// `[B, M, d]` and `u` their injections `[B, M, 3d]`; for TrellisNet `z` is the last state
/// `[B, 1, 2H]` and `u` the last embedding `[B, 1, d]`.
#[derive(Clone, Debug, Default)]
pub struct Memory<T: Float> {
    /// Past states.
    pub z: Option<Tensor<T>>,
    /// Past injections or embeddings.
    pub u: Option<Tensor<T>>,
}

/// A request for the Jacobian penalty at the equilibrium: probes per estimate and the
/// generator they are drawn from.
pub struct JacobianProbe<'a> {
    /// Gaussian probes.
    pub n_vecs: usize,
    /// Where they come from.
    pub rng: &'a mut Rng,
}

/// One segment's input to the implicit layer.
pub struct Segment<'a, T: Float> {
    /// The model's parameters as variables.
    pub p: &'a [Var<T>],
    /// The embedded tokens `[B, T, d_embed]` (scaled and dropped out as the model says).
    pub emb: &'a Var<T>,
    /// The previous segment's memory (empty for the first).
    pub mem: &'a Memory<T>,
    /// The solvers and backward mode.
    pub deq_cfg: &'a DeqConfig,
    /// Draws the cell's dropout masks (`None`: evaluation).
    pub rng: Option<&'a mut Rng>,
    /// Asks for the Jacobian penalty at the equilibrium.
    pub jac: Option<JacobianProbe<'a>>,
}

/// One segment's output of the implicit layer.
pub struct SegmentOutput<T: Float> {
    /// The output `[B, T, d_embed]` that the decoder reads.
    pub out: Var<T>,
    /// The implicit layer's statistics.
    pub stats: DeqStats,
    /// Memory for the next segment.
    pub memory: Memory<T>,
    /// The Jacobian penalty `‖J_f(z*)‖_F² / N`, when asked for.
    pub jacobian: Option<Var<T>>,
}

/// The last `m` positions of `[prev; cur]` along time (`None` when `m = 0`).
pub(crate) fn keep_last<T: Float>(
    prev: Option<&Tensor<T>>,
    cur: &Tensor<T>,
    m: usize,
) -> Option<Tensor<T>> {
    if m == 0 {
        return None;
    }
    let cat = match prev {
        Some(p) => Var::concat(&[&Var::constant(p.clone()), &Var::constant(cur.clone())], 1),
        None => Var::constant(cur.clone()),
    };
    let len = cat.dim(1);
    let keep = m.min(len);
    Some(cat.narrow(1, len - keep, keep).into_value())
}

/// `x[:, T-1:T, :]`.
pub(crate) fn last_position<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    let t = x.shape()[1];
    Var::constant(x.clone()).narrow(1, t - 1, 1).into_value()
}
