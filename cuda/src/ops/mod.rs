//! Device kernels grouped by op family. Every function queues work on the buffer's device and
//! returns at once; shapes are checked on the host and mismatches panic (programmer errors).

pub mod broadcast;
pub mod conv1d;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod layer_norm;
pub mod linear;
pub mod mask;
pub mod optim;
pub mod reduce;
pub mod rel_shift;
pub mod softmax;
pub mod solver;
pub mod strided;
