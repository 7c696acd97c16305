//! Embedding lookup on a CUDA device ([`crate::ops::embedding`]).

use crate::device::buf;
use crate::float::Float;
use crate::tensor::Tensor;
use deq_cuda::ops::embedding::{self as gpu, ScatterPlan};
use deq_cuda::GpuBuffer;

/// Rows `ids` of the `[vocab, dim]` table `w` (ids already validated), shaped `out`.
pub(crate) fn gather<T: Float>(
    w: &Tensor<T>,
    ids: &[usize],
    dim: usize,
    out: &[usize],
) -> Tensor<T> {
    let w = buf("embedding", w);
    let dev_ids = gpu::upload_indices(w.gpu(), ids, "embedding");
    Tensor::from_gpu(gpu::gather(w, &dev_ids, dim), out)
}

/// The ids grouped by value on the table's device, for a deterministic scatter-add.
pub(crate) fn scatter_plan<T: Float>(w: &Tensor<T>, ids: &[usize]) -> ScatterPlan {
    ScatterPlan::new(buf("embedding", w).gpu(), ids)
}

/// `dst[ids[j]] (+)= g[j]` row by row.
pub(crate) fn scatter_add<T: Float>(
    g: &GpuBuffer<T>,
    plan: &ScatterPlan,
    dim: usize,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::scatter_add(g, plan, dim, dst, acc);
}
