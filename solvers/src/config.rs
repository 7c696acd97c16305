//! Solver configuration: a typed struct whose every constructor and deserializer validates.
//!
//! Mistyped settings are errors, not silent defaults (torchdeq accepts unknown keys and
//! ignores them): every struct here rejects unknown serde fields, and values outside their
//! domain give a [`ConfigError`] naming the field.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Default Anderson history size `m` (locuslab/deq and torchdeq).
pub const DEFAULT_ANDERSON_M: usize = 6;
/// Default Anderson ridge `λ`, absolute (locuslab/deq and torchdeq).
pub const DEFAULT_ANDERSON_LAM: f64 = 1e-4;
/// Default Broyden memory: the number of low-rank pairs kept per sample.
pub const DEFAULT_BROYDEN_MEMORY: usize = 30;
/// Default iteration limit (locuslab/deq and torchdeq: 50).
pub const DEFAULT_MAX_ITER: usize = 50;
/// Default tolerance (locuslab/deq and torchdeq: 1e-3).
pub const DEFAULT_TOL: f64 = 1e-3;
/// Default protective-stop factor: a sample whose absolute residual exceeds this many times its
/// initial one is frozen and flagged diverged (locuslab/deq v2 uses 1e6 × sequence length in
/// the absolute mode).
pub const DEFAULT_PROTECT: f64 = 1e6;

fn one() -> f64 {
    1.0
}
fn default_m() -> usize {
    DEFAULT_ANDERSON_M
}
fn default_lam() -> f64 {
    DEFAULT_ANDERSON_LAM
}
fn default_memory() -> usize {
    DEFAULT_BROYDEN_MEMORY
}
fn default_max_iter() -> usize {
    DEFAULT_MAX_ITER
}
fn default_tol() -> f64 {
    DEFAULT_TOL
}
fn default_protect() -> f64 {
    DEFAULT_PROTECT
}
fn default_true() -> bool {
    true
}

/// Which fixed-point method, with its own parameters. Each solves `z = f(z)`, i.e. finds a
/// root of the residual `g(z) = f(z) − z`, per sample of a batch.
///
/// In JSON the method is the `kind` tag: `{"kind": "anderson", "m": 5}`; omitted parameters
/// take the documented defaults, unknown ones are an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum SolverKind {
    /// Damped fixed-point iteration `z ← τ·f(z) + (1 − τ)·z`; converges when `f` is a
    /// contraction (rate ≈ the Lipschitz constant of the damped map).
    Naive {
        /// Damping `τ ∈ (0, 1]`; 1 (the default) is the plain iteration `z ← f(z)`.
        #[serde(default = "one")]
        tau: f64,
    },
    /// Anderson acceleration (type II, REFERENCE 2(b)): the next iterate mixes the last
    /// `n ≤ m` iterates `X_i` and residuals `G_i = f(X_i) − X_i` with weights `α` that
    /// minimise `‖Σ α_i G_i‖² + λ‖α‖²` subject to `Σ α_i = 1`:
    /// `z ← Σ α_i X_i + β Σ α_i G_i`.
    Anderson {
        /// History size `m ≥ 1` (default 6).
        #[serde(default = "default_m")]
        m: usize,
        /// Ridge `λ ≥ 0` added to `G Gᵀ`, absolute (not scaled by `‖G‖`), default 1e-4.
        #[serde(default = "default_lam")]
        lam: f64,
        /// Mixing `β ∈ (0, 1]` (torchdeq calls it `tau`), default 1.
        #[serde(default = "one")]
        beta: f64,
    },
    /// Limited-memory "good" Broyden in inverse form (REFERENCE 2(a)): an estimate
    /// `B ≈ J_g⁻¹ = −I + Σ u_i v_iᵀ` updated by Sherman–Morrison after every step, and the
    /// quasi-Newton step `z ← z − B g(z)`. At most `memory` pairs `(u_i, v_i)` are kept per
    /// sample; the oldest is dropped first, so memory does not grow with `max_iter`.
    Broyden {
        /// Low-rank pairs kept per sample, `≥ 1` (default 30).
        #[serde(default = "default_memory")]
        memory: usize,
    },
}

/// What the tolerance is compared with, per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Absolute residual `‖f(z) − z‖`.
    Abs,
    /// Relative residual `‖f(z) − z‖ / (‖f(z)‖ + 1e-9)`.
    Rel,
}

/// A complete solver configuration. Build it with [`SolverConfig::new`], the presets
/// [`naive`](SolverConfig::naive) / [`anderson`](SolverConfig::anderson) /
/// [`broyden`](SolverConfig::broyden), or [`SolverConfig::from_json`]; all of them validate.
/// After changing public fields by hand, call [`SolverConfig::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawSolverConfig")]
pub struct SolverConfig {
    /// The method and its parameters.
    pub kind: SolverKind,
    /// Iteration limit `≥ 1`. Naive and Anderson make one f call per iteration; Broyden makes
    /// one more for the initial residual (f-evals = iterations + 1).
    pub max_iter: usize,
    /// Tolerance `> 0` on the residual chosen by `stop_mode`; a sample has converged when its
    /// residual is strictly below it.
    pub tol: f64,
    /// Absolute or relative residual.
    pub stop_mode: StopMode,
    /// Protective-stop factor `> 1` (`inf` disables it): a sample whose absolute residual
    /// exceeds `protect ×` its initial absolute residual, or whose `f(z)` is not finite, is
    /// frozen at its lowest-residual finite iterate and flagged diverged. The absolute residual
    /// is used in both stop modes because the relative one stays bounded on a diverging map
    /// (for `z → 2z + 1` it tends to 1/2).
    pub protect: f64,
    /// `true` (default): a sample freezes once converged and the batch stops when every sample
    /// has. `false`: run exactly `max_iter` iterations (benchmarks), stopping early only when
    /// every sample has diverged.
    pub early_stop: bool,
}

/// The serde image of [`SolverConfig`], validated on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSolverConfig {
    kind: SolverKind,
    #[serde(default = "default_max_iter")]
    max_iter: usize,
    #[serde(default = "default_tol")]
    tol: f64,
    #[serde(default = "default_stop_mode")]
    stop_mode: StopMode,
    #[serde(default = "default_protect")]
    protect: f64,
    #[serde(default = "default_true")]
    early_stop: bool,
}

fn default_stop_mode() -> StopMode {
    StopMode::Rel
}

impl TryFrom<RawSolverConfig> for SolverConfig {
    type Error = ConfigError;
    fn try_from(raw: RawSolverConfig) -> Result<Self, ConfigError> {
        let cfg = SolverConfig {
            kind: raw.kind,
            max_iter: raw.max_iter,
            tol: raw.tol,
            stop_mode: raw.stop_mode,
            protect: raw.protect,
            early_stop: raw.early_stop,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A configuration value outside its domain, or JSON that does not describe a configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    /// The offending field (`"m"`, `"tol"`, …), or `"json"` when the text itself is rejected
    /// (syntax, an unknown key, a wrong type); the message then quotes serde's, which names the
    /// key.
    pub field: &'static str,
    /// What is wrong and which value was given.
    pub message: String,
}

impl ConfigError {
    fn new(field: &'static str, message: String) -> Self {
        ConfigError { field, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid solver config field `{}`: {}",
            self.field, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

impl SolverConfig {
    /// A validated configuration with the default `protect` (1e6) and `early_stop` (true).
    pub fn new(
        kind: SolverKind,
        max_iter: usize,
        tol: f64,
        stop_mode: StopMode,
    ) -> Result<Self, ConfigError> {
        let cfg = SolverConfig {
            kind,
            max_iter,
            tol,
            stop_mode,
            protect: DEFAULT_PROTECT,
            early_stop: true,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn preset(kind: SolverKind) -> Self {
        SolverConfig {
            kind,
            max_iter: DEFAULT_MAX_ITER,
            tol: DEFAULT_TOL,
            stop_mode: StopMode::Rel,
            protect: DEFAULT_PROTECT,
            early_stop: true,
        }
    }

    /// Plain iteration (`τ = 1`), 50 iterations, relative tolerance 1e-3.
    pub fn naive() -> Self {
        Self::preset(SolverKind::Naive { tau: 1.0 })
    }

    /// Anderson with `m = 6`, `λ = 1e-4`, `β = 1` (locuslab/deq defaults), 50 iterations,
    /// relative tolerance 1e-3.
    pub fn anderson() -> Self {
        Self::preset(SolverKind::Anderson {
            m: DEFAULT_ANDERSON_M,
            lam: DEFAULT_ANDERSON_LAM,
            beta: 1.0,
        })
    }

    /// Broyden with `memory = 30`, 50 iterations, relative tolerance 1e-3.
    pub fn broyden() -> Self {
        Self::preset(SolverKind::Broyden {
            memory: DEFAULT_BROYDEN_MEMORY,
        })
    }

    /// Parses and validates JSON such as
    /// `{"kind": {"kind": "anderson", "m": 5}, "max_iter": 30, "tol": 1e-5}`.
    /// Omitted fields take their defaults (`stop_mode` `"rel"`); unknown keys are an error.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let raw: RawSolverConfig =
            serde_json::from_str(text).map_err(|e| ConfigError::new("json", e.to_string()))?;
        SolverConfig::try_from(raw)
    }

    /// Checks every value against its domain; the error names the first offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            SolverKind::Naive { tau } => unit_interval("tau", tau)?,
            SolverKind::Anderson { m, lam, beta } => {
                if m == 0 {
                    return Err(ConfigError::new(
                        "m",
                        "history size m must be ≥ 1, got 0".into(),
                    ));
                }
                if !(lam.is_finite() && lam >= 0.0) {
                    return Err(ConfigError::new(
                        "lam",
                        format!("ridge lam must be finite and ≥ 0, got {lam}"),
                    ));
                }
                unit_interval("beta", beta)?;
            }
            SolverKind::Broyden { memory } => {
                if memory == 0 {
                    return Err(ConfigError::new(
                        "memory",
                        "Broyden memory must be ≥ 1 pair, got 0".into(),
                    ));
                }
            }
        }
        if self.max_iter == 0 {
            return Err(ConfigError::new(
                "max_iter",
                "max_iter must be ≥ 1, got 0".into(),
            ));
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return Err(ConfigError::new(
                "tol",
                format!("tol must be finite and > 0, got {}", self.tol),
            ));
        }
        if self.protect.is_nan() || self.protect <= 1.0 {
            return Err(ConfigError::new(
                "protect",
                format!(
                    "protect must be > 1 (inf disables it), got {}",
                    self.protect
                ),
            ));
        }
        Ok(())
    }
}

/// `x ∈ (0, 1]`, else an error naming `field`.
fn unit_interval(field: &'static str, x: f64) -> Result<(), ConfigError> {
    if x > 0.0 && x <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{field} must lie in (0, 1], got {x}"),
        ))
    }
}
