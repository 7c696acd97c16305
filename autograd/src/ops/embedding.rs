//! Embedding lookup: rows of a weight matrix gathered by integer ids; the VJP scatter-adds.

use crate::float::Float;
use crate::kernels;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

struct EmbeddingBackward {
    ids: Vec<u32>,
    dim: usize,
}

impl<T: Float> Backward<T> for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "embedding"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let d = self.dim;
        kernels::prepare(dst, acc);
        for (j, &id) in self.ids.iter().enumerate() {
            let row = &mut dst[id as usize * d..(id as usize + 1) * d];
            row.iter_mut()
                .zip(&g[j * d..(j + 1) * d])
                .for_each(|(o, &v)| *o += v);
        }
    }
}

/// The backward rule of an embedding recorded on a CUDA device: the ids grouped by value on
/// the device, for a deterministic scatter-add.
#[cfg(feature = "cuda")]
struct EmbeddingBackwardGpu {
    plan: deq_cuda::ops::embedding::ScatterPlan,
    dim: usize,
}

#[cfg(feature = "cuda")]
impl<T: Float> Backward<T> for EmbeddingBackwardGpu {
    fn name(&self) -> &'static str {
        "embedding"
    }

    fn vjp(&self, _k: usize, _g: &[T], _dst: &mut [T], _acc: bool) {
        unreachable!("embedding: recorded on a CUDA device, differentiated on the host")
    }

    fn vjp_gpu(
        &self,
        _k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        deq_cuda::ops::embedding::scatter_add(g, &self.plan, self.dim, dst, acc);
    }
}

/// The forward pass of [`Var::embedding`] on a CUDA device (ids already validated).
#[cfg(feature = "cuda")]
fn embedding_gpu<T: Float>(
    table: &Var<T>,
    w: &deq_cuda::GpuBuffer<T>,
    ids: &[usize],
    out_shape: &[usize],
    dim: usize,
) -> Var<T> {
    use deq_cuda::ops::embedding::{gather, upload_indices, ScatterPlan};
    let dev_ids = upload_indices(w.gpu(), ids, "embedding");
    let out = gather(w, &dev_ids, dim);
    record(Tensor::from_gpu(out, out_shape), &[table], || {
        EmbeddingBackwardGpu {
            plan: ScatterPlan::new(w.gpu(), ids),
            dim,
        }
    })
}

impl<T: Float> Var<T> {
    /// Gathers rows of `self` (a `[vocab, dim]` table): the result has shape
    /// `ids_shape + [dim]`. Panics if an id is out of range (validate data when loading it).
    pub fn embedding(&self, ids: &[usize], ids_shape: &[usize]) -> Var<T> {
        let shape = self.shape();
        assert!(
            shape.len() == 2,
            "embedding: weight must be [vocab, dim], got shape {shape:?}"
        );
        let count: usize = ids_shape.iter().product();
        assert_eq!(
            count,
            ids.len(),
            "embedding: {} ids for ids shape {ids_shape:?}",
            ids.len()
        );
        let (vocab, dim) = (shape[0], shape[1]);
        #[cfg(feature = "cuda")]
        if let Some(w) = self.value().gpu() {
            if let Some(&id) = ids.iter().find(|&&id| id >= vocab) {
                panic!("embedding: id {id} out of range for a table of shape {shape:?}");
            }
            let mut out_shape = Shape::from_slice(ids_shape);
            out_shape.push(dim);
            return embedding_gpu(self, w, ids, &out_shape, dim);
        }
        let w = self.value().data();
        let mut out = Vec::with_capacity(ids.len() * dim);
        for &id in ids {
            assert!(
                id < vocab,
                "embedding: id {id} out of range for a table of shape {shape:?}"
            );
            out.extend_from_slice(&w[id * dim..(id + 1) * dim]);
        }
        let mut out_shape = Shape::from_slice(ids_shape);
        out_shape.push(dim);
        record(Tensor::from_vec(out, &out_shape), &[self], || {
            EmbeddingBackward {
                ids: ids.iter().map(|&i| i as u32).collect(),
                dim,
            }
        })
    }
}
