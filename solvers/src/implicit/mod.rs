//! The implicit (DEQ) layer: equilibrium forward, implicit / phantom / unrolled backward,
//! Jacobian regularisation, spectral radius, variational dropout, and [`check_cell`], the
//! gradient check for user-written cells.

pub mod check;
pub mod config;
pub mod dropout;
pub mod jacobian;
pub mod layer;

pub use check::{check_cell, CellCheckOptions, CellCheckReport, CheckKind, CheckRow};
pub use config::{BackwardMode, DeqConfig};
pub use dropout::VariationalDropout;
pub use jacobian::{jacobian_penalty, spectral_radius};
pub use layer::{deq, DeqOutput, DeqStats, ImplicitCell, RowWise};
