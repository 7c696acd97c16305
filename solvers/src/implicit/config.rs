//! Configuration of the implicit layer: forward and backward solvers and the backward mode.

use crate::config::{ConfigError, SolverConfig};
use serde::{Deserialize, Serialize};

/// How gradients flow through the equilibrium.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum BackwardMode {
    /// Implicit differentiation (the paper's Theorem 1): solve `y = y·J_f(z*) + ∂L/∂z*` with the
    /// backward solver, then map `y` into `x` and the parameters through one recorded `f(z*)`.
    /// Memory does not depend on the number of solver iterations.
    #[default]
    Implicit,
    /// Phantom gradient (torchdeq): from the detached `z*`, record `k` damped steps
    /// `z ← τ·f(z) + (1 − τ)·z` and back-propagate through them. `k = 1, τ = 1` is
    /// Jacobian-free backpropagation (JFB: the gradient of `f(z*)` with `z*` held constant).
    Phantom {
        /// Recorded steps, ≥ 1.
        k: usize,
        /// Damping in `(0, 1]`.
        tau: f64,
    },
    /// No solve: `k` recorded plain applications `z ← f(z)` from `z0` and ordinary
    /// backpropagation (the paper's unrolled pre-training). Memory grows with `k`.
    Unrolled {
        /// Recorded applications, ≥ 1.
        k: usize,
    },
}

/// The implicit layer's settings: `forward` finds `z*`, `backward` solves the adjoint
/// fixed point (`f_max_iter`, `f_tol` and the stop mode are `forward.max_iter`, `forward.tol`,
/// `forward.stop_mode`; likewise `b_*` in `backward`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawDeqConfig")]
pub struct DeqConfig {
    /// Solver for `z* = f(z*)`.
    pub forward: SolverConfig,
    /// Solver for `y = y·J_f(z*) + ∂L/∂z*` (used by [`BackwardMode::Implicit`]).
    pub backward: SolverConfig,
    /// How gradients are computed.
    pub mode: BackwardMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeqConfig {
    forward: SolverConfig,
    backward: SolverConfig,
    #[serde(default)]
    mode: BackwardMode,
}

impl TryFrom<RawDeqConfig> for DeqConfig {
    type Error = ConfigError;
    fn try_from(raw: RawDeqConfig) -> Result<Self, ConfigError> {
        let cfg = DeqConfig {
            forward: raw.forward,
            backward: raw.backward,
            mode: raw.mode,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl DeqConfig {
    /// A validated configuration.
    pub fn new(
        forward: SolverConfig,
        backward: SolverConfig,
        mode: BackwardMode,
    ) -> Result<Self, ConfigError> {
        let cfg = DeqConfig {
            forward,
            backward,
            mode,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks both solvers and the backward mode.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.forward.validate()?;
        self.backward.validate()?;
        match self.mode {
            BackwardMode::Implicit => Ok(()),
            BackwardMode::Phantom { k, tau } => {
                check_k(k)?;
                if tau > 0.0 && tau <= 1.0 {
                    Ok(())
                } else {
                    Err(ConfigError {
                        field: "tau",
                        message: format!("phantom damping tau must lie in (0, 1], got {tau}"),
                    })
                }
            }
            BackwardMode::Unrolled { k } => check_k(k),
        }
    }

    /// Parses and validates JSON such as
    /// `{"forward": {"kind": {"kind": "broyden"}}, "backward": {"kind": {"kind": "broyden"}},
    ///   "mode": {"kind": "implicit"}}`; unknown keys are an error.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError {
            field: "json",
            message: e.to_string(),
        })
    }
}

fn check_k(k: usize) -> Result<(), ConfigError> {
    if k == 0 {
        Err(ConfigError {
            field: "k",
            message: "the number of recorded steps k must be ≥ 1, got 0".into(),
        })
    } else {
        Ok(())
    }
}
