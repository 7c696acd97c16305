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
//! - [`train::Trainer`]: training steps with unrolled pre-training, evaluation and exact resume
//!   ([`state`], [`checkpoint`]: safetensors files); [`config`]: the run's configuration and
//!   presets; [`score`]: a split's perplexity under the evaluation protocol; [`sizes`]: sizes
//!   checked against the data and the machine before allocating; [`data`]: vocabularies,
//!   corpora, batching; [`error::DeqError`]: every input failure as a typed error.
//!
//! # The model
//!
//! For a segment of tokens `w_1..w_T`: embeddings `e_t = E[w_t]`, an injection `u` computed
//! once from them (a linear map for the Transformer, a kernel-2 causal convolution for
//! TrellisNet), the equilibrium `z* = f(z*; u)` of the cell through
//! [`deq_solvers::deq`] (so gradients come from the implicit backward, or the phantom /
//! unrolled modes of the [`DeqConfig`](deq_solvers::DeqConfig)), logits `z*·Eᵀ + b` tied to
//! the embedding, and the mean cross-entropy over the `B·T` targets. States of the previous
//! segment are carried, detached, in a [`Memory`].
//!
//! # Example
//!
//! A tiny DEQ-Transformer language model: one loss on six tokens, its gradient and the
//! solvers' statistics.
//!
//! ```
//! use deq_autograd::{Rng, Tape, Tensor};
//! use deq_models::cells::TransformerConfig;
//! use deq_models::{CellConfig, LanguageModel, Memory, ModelConfig};
//! use deq_solvers::{BackwardMode, DeqConfig, SolverConfig};
//!
//! let cfg = ModelConfig {
//!     vocab: 7,
//!     d_embed: 8,
//!     emb_dropout: 0.0,
//!     emb_scale: true,
//!     out_dropout: 0.0,
//!     cell: CellConfig::Transformer(TransformerConfig {
//!         d_model: 8, n_head: 2, d_inner: 16, mem_len: 3, dropout: 0.0, pos_dropout: 0.0,
//!         att_dropout: 0.0, weight_norm: true,
//!     }),
//! };
//! let model = LanguageModel::<f64>::new(&cfg, &mut Rng::new(0));
//! let (fwd, bwd) = (SolverConfig::broyden(), SolverConfig::broyden());
//! let deq_cfg = DeqConfig::new(fwd, bwd, BackwardMode::Implicit).unwrap();
//!
//! // Two streams of three tokens; targets are the next tokens.
//! let (tokens, targets) = ([1, 4, 2, 6, 0, 3], [4, 2, 5, 0, 3, 1]);
//! let tape = Tape::new();
//! let params = model.store.leaves(&tape);
//! let out = model.forward(&params, &tokens, &targets, 2, &Memory::default(), &deq_cfg, None);
//! let loss = out.loss.item();
//! assert!((loss - (7.0f64).ln()).abs() < 0.5, "near-uniform predictions at initialisation");
//!
//! let wrt: Vec<_> = params.iter().collect();
//! let grads = tape.vjp(&[&out.loss], &[&Tensor::scalar(1.0)], &wrt);
//! assert_eq!(grads.len(), model.store.len());
//! let fs = out.stats.forward.as_ref().unwrap();
//! let bs = out.stats.backward().unwrap();
//! println!("loss {loss:.4}; forward {} iterations, backward {}", fs.iterations, bs.iterations);
//! // The next segment continues from `out.memory`.
//! assert!(out.memory.z.is_some());
//! ```

#![warn(missing_docs)]

pub mod cells;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod layers;
pub mod lm;
pub mod optim;
pub mod params;
pub mod score;
pub mod segment;
pub mod sizes;
pub mod state;
pub mod train;

pub use lm::{CellConfig, LanguageModel, Memory, ModelConfig};
pub use params::{ParamId, ParamStore};
