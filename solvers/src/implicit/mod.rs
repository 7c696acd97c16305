//! The implicit (DEQ) layer: equilibrium forward, implicit / phantom / unrolled backward,
//! Jacobian regularisation, spectral radius and variational dropout.

pub mod config;
pub mod dropout;
pub mod jacobian;
pub mod layer;

pub use config::{BackwardMode, DeqConfig};
pub use dropout::VariationalDropout;
pub use jacobian::{jacobian_penalty, spectral_radius};
pub use layer::{deq, DeqOutput, DeqStats, ImplicitCell};
