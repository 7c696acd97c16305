//! # deq-models: layers, DEQ cells, language models and training
//!
//! The paper's two language models, written against the `deq-autograd` ops and solved with the
//! `deq-solvers` implicit layer:
//!
//! - [`cells::DeqTransformerCell`]: `f(z; u) = LN(h + FFN(h))`, `h = LN(z + Attn(z·W_qkv + u))`
//!   with Transformer-XL relative positions and a memory of the previous segment.
//! - [`cells::TrellisNetCell`]: a gated kernel-2 causal convolution over `z = [h; c]`.
//! - [`lm::LanguageModel`]: embedding → injection → DEQ → output tied to the embedding.
//! - [`optim`]: Adam/AdamW, gradient clipping, warm-up + cosine schedule.
//! - [`params::ParamStore`]: named parameters (checkpoint names).

pub mod cells;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod layers;
pub mod lm;
pub mod optim;
pub mod params;
pub mod state;
pub mod train;

pub use lm::{CellConfig, LanguageModel, Memory, ModelConfig};
pub use params::{ParamId, ParamStore};
