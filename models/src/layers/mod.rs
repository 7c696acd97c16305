//! Layers written against the autograd ops: linear maps and convolution kernels (optionally
//! weight-normalised),
//! relative-position causal self-attention with memory, the position-wise FFN and sinusoidal
//! position embeddings.

pub mod attention;
pub mod conv;
pub mod linear;
pub mod position;
pub mod weight_norm;

pub use attention::{rel_shift, RelAttention};
pub use conv::ConvWeight;
pub use linear::Linear;
pub use position::sinusoid;
