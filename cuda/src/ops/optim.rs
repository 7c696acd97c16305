//! Optimiser updates (Adam/AdamW) and gradient norms, in place on device buffers.

use crate::launch::{launch, linear, Arg};
use crate::{GpuBuffer, GpuFloat};

/// The scalars of one Adam step, precomputed on the host in the parameter's precision
/// (see `deq_models::optim::Adam::step` for the formula).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// `lr / (1 − β₁ᵗ)`.
    pub step: f64,
    /// `1 / (1 − β₂ᵗ)`.
    pub inv_bc2: f64,
    /// ε.
    pub eps: f64,
    /// Coupled (L2) weight decay.
    pub weight_decay: f64,
    /// `lr · weight_decay` for decoupled (AdamW) decay.
    pub decay: f64,
    /// AdamW (decoupled decay) instead of Adam with L2.
    pub decoupled: bool,
}

/// One Adam/AdamW update of `p` with gradient `g` and moments `m`, `v`, all in place.
pub fn adam<T: GpuFloat>(
    p: &mut GpuBuffer<T>,
    g: &GpuBuffer<T>,
    m: &mut GpuBuffer<T>,
    v: &mut GpuBuffer<T>,
    s: &AdamStep,
) {
    let n = p.len();
    for (what, len) in [("gradient", g.len()), ("m", m.len()), ("v", v.len())] {
        assert_eq!(len, n, "adam: {what} has {len} values, the parameter {n}");
    }
    launch::<T>(
        p.gpu(),
        "optim_adam",
        linear(n),
        &[
            Arg::Ptr(p.ptr()),
            Arg::Ptr(g.ptr()),
            Arg::Ptr(m.ptr()),
            Arg::Ptr(v.ptr()),
            Arg::len(n),
            Arg::real::<T>(s.beta1),
            Arg::real::<T>(s.beta2),
            Arg::real::<T>(s.step),
            Arg::real::<T>(s.inv_bc2),
            Arg::real::<T>(s.eps),
            Arg::real::<T>(s.weight_decay),
            Arg::real::<T>(s.decay),
            Arg::flag(s.decoupled),
        ],
    );
}

/// `Σ x²` over all buffers, accumulated in f64 on the device; one download at the end.
pub fn sum_squares<T: GpuFloat>(xs: &[&GpuBuffer<T>]) -> f64 {
    let Some(first) = xs.first() else {
        return 0.0;
    };
    let out = first.gpu().zeros::<f64>(1);
    for x in xs {
        launch::<T>(
            x.gpu(),
            "optim_sum_squares",
            linear(x.len()),
            &[Arg::Ptr(x.ptr()), Arg::len(x.len()), Arg::Ptr(out.ptr())],
        );
    }
    out.to_vec()[0]
}
