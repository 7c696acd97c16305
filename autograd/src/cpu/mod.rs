//! CPU kernels of the fused ops: the loops behind one op each, called by the op's file in
//! [`crate::ops`] (which holds the `Var` method, the shape checks and the backward rule).

pub mod attention;
pub(crate) mod binary;
pub(crate) mod conv1d;
pub mod cross_entropy;
pub(crate) mod embedding;
pub mod layer_norm;
pub(crate) mod linear;
pub(crate) mod lstm_gates;
pub(crate) mod mask;
pub(crate) mod matmul;
pub(crate) mod reduce;
pub(crate) mod reduce_f32;
pub mod rows;
pub(crate) mod shape_ops;
pub mod softmax;
pub(crate) mod unary;
