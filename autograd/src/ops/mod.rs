//! The differentiable ops. Each file holds one family of ops and its hand-written VJPs;
//! the ops themselves are methods on [`Var`](crate::Var).

pub mod attention;
pub mod attention_dropout;
pub mod binary;
pub mod broadcast;
pub mod conv1d;
pub mod cross_entropy;
pub mod embedding;
pub mod layer_norm;
pub mod linear;
pub mod lstm_gates;
pub mod mask;
pub mod matmul;
pub mod reduce;
pub mod shape_ops;
pub mod softmax;
pub mod unary;
