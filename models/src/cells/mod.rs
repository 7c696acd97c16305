//! The two DEQ cells of the paper: the DEQ-Transformer block and the TrellisNet layer.

pub mod transformer;
pub mod trellis;

pub use transformer::{DeqTransformerCell, TransformerConfig, TransformerStep};
pub use trellis::{TrellisConfig, TrellisNetCell, TrellisStep};
