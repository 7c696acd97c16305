//! CPU kernels of the fused ops: the loops behind one op each, called by the op's file in
//! [`crate::ops`] (which holds the `Var` method, the shape checks and the backward rule).

pub mod attention;
pub mod cross_entropy;
pub mod layer_norm;
pub mod rows;
pub mod softmax;
