//! Transformer-XL's relative shift on a CUDA device ([`crate::Var::rel_shift`]).

use crate::device::buf;
use crate::float::Float;
use crate::tensor::Tensor;
use deq_cuda::ops::rel_shift as gpu;
use deq_cuda::GpuBuffer;

/// The shifted `[B, H, T, K]` scores `x` (`t` = T, `k` = K).
pub(crate) fn forward<T: Float>(x: &Tensor<T>, t: usize, k: usize) -> Tensor<T> {
    let xb = buf("rel_shift", x);
    let mut y = xb.gpu().alloc::<T>(xb.len());
    gpu::rel_shift(xb, t, k, &mut y, false);
    Tensor::from_gpu(y, x.shape())
}

/// `dst (+)= shift(g)`: the VJP, the same re-indexing (it is its own transpose).
pub(crate) fn backward<T: Float>(
    g: &GpuBuffer<T>,
    t: usize,
    k: usize,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::rel_shift(g, t, k, dst, acc);
}
