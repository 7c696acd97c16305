//! CUDA kernels of the ops: thin wrappers over `deq_cuda::ops` and `deq_cuda::blas`, one file
//! per op, called from the op's dispatch points in [`crate::ops`] (which hold the `Var` method,
//! the shape checks and the backward rule). Each wrapper takes the op's tensors, hands their
//! device buffers to one `deq_cuda` call and wraps the result; the CPU loops of the same ops
//! are in [`crate::cpu`]. Compiled only with the `cuda` feature.

pub(crate) mod binary;
pub(crate) mod conv1d;
pub(crate) mod cross_entropy;
pub(crate) mod embedding;
pub(crate) mod layer_norm;
pub(crate) mod linear;
pub(crate) mod mask;
pub(crate) mod matmul;
pub(crate) mod reduce;
pub(crate) mod rel_shift;
pub(crate) mod shape_ops;
pub(crate) mod softmax;
pub(crate) mod unary;
