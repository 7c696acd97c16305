//! The two DEQ cells of the paper, the DEQ-Transformer block and the TrellisNet layer, and
//! each one as a language model's implicit layer (its injection, its memory, one segment's
//! solve; see [`crate::segment`]).

pub mod transformer;
pub mod transformer_layer;
pub mod trellis;
pub mod trellis_layer;

pub use transformer::{DeqTransformerCell, TransformerConfig, TransformerStep};
pub use transformer_layer::TransformerLayer;
pub use trellis::{TrellisConfig, TrellisNetCell, TrellisStep};
pub use trellis_layer::TrellisLayer;
