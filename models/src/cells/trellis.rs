//! The DEQ-TrellisNet cell (Bai et al. 2019; TrellisNet, Bai et al. 2018):
//!
//! state `z = [h; c]` (`[B, T, 2H]`), `pre_t = u_t + W_0·h_{t-1} + W_1·h_t + b` (a causal
//! convolution of kernel 2, with the previous segment's last `h` as history), gates
//! `i, f, o, g = split(pre)`, then `c'_t = σ(f)·c_{t-1} + σ(i)·tanh(g)` (with `c_{t-1}` the
//! previous time step's cell state, the history at `t = 0`) and `h'_t = σ(o)·tanh(c'_t)`.
//! The injection `u` is a kernel-2 causal convolution of the embedding computed once per
//! forward pass. Variational dropout on `h` and weight drop on the kernel use one mask per
//! forward pass.

use crate::layers::ConvWeight;
use crate::params::{ParamId, ParamStore};
use deq_autograd::{Float, Rng, Tensor, Var};
use deq_solvers::implicit::{ImplicitCell, VariationalDropout};
use serde::{Deserialize, Serialize};

/// Sizes of the TrellisNet cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrellisConfig {
    /// Hidden width `H` of `h` and of `c`; must be ≥ the embedding width (the output is the
    /// last `d_embed` channels of `h`).
    pub hidden: usize,
    /// Variational dropout on `h` inside the cell (training only).
    pub dropout: f64,
    /// Weight drop (DropConnect, the reference's `wdrop`): each entry of the cell's
    /// convolution kernel is dropped with this rate and the kept ones scaled by `1/(1 − p)`,
    /// one mask per forward pass, applied after weight normalisation, so every solver
    /// iteration and the backward pass see one kernel; training only. Configurations
    /// written without the field: 0.
    #[serde(default)]
    pub weight_drop: f64,
    /// Weight-normalise the cell's and the injection's convolutions (per output channel, as
    /// the reference). Configurations written without the field: off.
    #[serde(default)]
    pub weight_norm: bool,
}

/// The cell's parameters: the kernel-2 convolution `[2, H, 4H]` (optionally weight-normalised)
/// and its bias `[4H]`.
#[derive(Clone, Debug)]
pub struct TrellisNetCell {
    /// Configuration.
    pub cfg: TrellisConfig,
    w: ConvWeight,
    b: ParamId,
}

impl TrellisNetCell {
    /// Registers the cell's parameters under `name.*`.
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        cfg: &TrellisConfig,
        rng: &mut Rng,
    ) -> Self {
        let h = cfg.hidden;
        let bound = 1.0 / (2.0 * h as f64).sqrt();
        let conv = format!("{name}.conv");
        let w = ConvWeight::new(store, &conv, [2, h, 4 * h], bound, cfg.weight_norm, rng);
        let b = store.uniform(&format!("{name}.conv.bias"), &[4 * h], bound, rng);
        TrellisNetCell {
            cfg: cfg.clone(),
            w,
            b,
        }
    }

    /// The cell's parameters for [`TrellisStep`]: `[Wᵀ, b]`, the kernel `[2, H, 4H]` (tap 0
    /// for `h_{t-1}`, tap 1 for `h_t`) as the `[4H, 2H]` weight of one linear map of
    /// `[h_{t-1}, h_t]`. Normalised, dropped and laid out once per forward pass, not once per
    /// solver iteration. `rng` draws the weight-drop mask (`None`: evaluation, the kernel as it
    /// is).
    pub fn prepare<T: Float>(&self, p: &[Var<T>], rng: Option<&mut Rng>) -> Vec<Var<T>> {
        let mut w = self.w.weight(p);
        if let Some(r) = rng.filter(|_| self.cfg.weight_drop > 0.0) {
            w = VariationalDropout::new(w.shape(), self.cfg.weight_drop, r).apply(&w);
        }
        let h = self.cfg.hidden;
        let w_t = w.reshape(&[2 * h, 4 * h]).transpose(0, 1);
        vec![w_t, p[self.b.0].clone()]
    }

    /// A context for one forward pass: history `[B, 1, 2H]` (zeros when `None`) and a dropout
    /// mask (`rng = None`: evaluation).
    pub fn step<T: Float>(
        &self,
        batch: usize,
        history: Option<Tensor<T>>,
        rng: Option<&mut Rng>,
    ) -> TrellisStep<T> {
        let h = self.cfg.hidden;
        let history = history.unwrap_or_else(|| Tensor::zeros(&[batch, 1, 2 * h]));
        let drop = match rng {
            Some(r) if self.cfg.dropout > 0.0 => {
                VariationalDropout::new(&[batch, 1, h], self.cfg.dropout, r)
            }
            _ => VariationalDropout::identity(),
        };
        TrellisStep {
            hidden: h,
            history: Var::constant(history),
            drop,
        }
    }
}

/// One forward pass's view of the cell: `f(z, u, [W, b])`.
pub struct TrellisStep<T: Float> {
    hidden: usize,
    history: Var<T>,
    drop: VariationalDropout<T>,
}

impl<T: Float> ImplicitCell<T> for TrellisStep<T> {
    fn apply(&self, z: &Var<T>, u: &Var<T>, p: &[Var<T>]) -> Var<T> {
        let (t, h) = (z.dim(1), self.hidden);
        let (hs, cs) = (z.narrow(2, 0, h), z.narrow(2, h, h));
        let (h_hist, c_hist) = (self.history.narrow(2, 0, h), self.history.narrow(2, h, h));
        // The kernel-2 causal convolution as one product over all positions (the threads
        // share it): `pre_t = [h_{t-1}, h_t]·Wᵀ + b + u_t`.
        let hs = self.drop.apply(&hs);
        let h_prev = if t > 1 {
            Var::concat(&[&h_hist, &hs.narrow(1, 0, t - 1)], 1)
        } else {
            h_hist
        };
        let pre = Var::concat(&[&h_prev, &hs], 2)
            .linear(&p[0], Some(&p[1]))
            .add(u);
        let c_prev = if t > 1 {
            Var::concat(&[&c_hist, &cs.narrow(1, 0, t - 1)], 1)
        } else {
            c_hist
        };
        pre.lstm_gates(&c_prev)
    }
}
