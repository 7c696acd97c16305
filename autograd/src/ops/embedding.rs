//! Embedding lookup: rows of a weight matrix gathered by integer ids; the VJP scatter-adds
//! (`∂W[id] = Σ_{j: ids[j] = id} g[j]`). The loops are in `crate::cpu::embedding` and
//! `crate::cuda::embedding`.

use crate::cpu::embedding as cpu;
use crate::device::{cuda_type, cuda_vjp, on_cuda, Device, Kept};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

/// The ids, in the form the table's device scatters by: on a device grouped by value, for a
/// deterministic scatter-add.
type KeptIds = Kept<Vec<u32>, cuda_type!(deq_cuda::ops::embedding::ScatterPlan)>;

/// The ids kept for the VJP of a lookup in `table`.
fn keep_ids<T: Float>(table: &Tensor<T>, ids: &[usize]) -> KeptIds {
    match table.device() {
        Device::Cpu => Kept::Host(ids.iter().map(|&i| i as u32).collect()),
        Device::Cuda(_) => on_cuda!(Kept::Cuda(crate::cuda::embedding::scatter_plan(table, ids))),
    }
}

struct EmbeddingBackward {
    ids: KeptIds,
    dim: usize,
}

impl<T: Float> Backward<T> for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "embedding"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        cpu::scatter_add(g, self.ids.host("embedding"), self.dim, dst, acc);
    }

    cuda_vjp!(|op, _k, g, dst, acc| {
        let plan = op.ids.cuda("embedding");
        crate::cuda::embedding::scatter_add(g, plan, op.dim, dst, acc)
    });
}

/// The gather kernel on the table's device.
fn gather<T: Float>(table: &Tensor<T>, ids: &[usize], dim: usize, out: &[usize]) -> Tensor<T> {
    match table.device() {
        Device::Cpu => Tensor::from_vec(cpu::gather(table.data(), ids, dim), out),
        Device::Cuda(_) => on_cuda!(crate::cuda::embedding::gather(table, ids, dim, out)),
    }
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
        if let Some(&id) = ids.iter().find(|&&id| id >= vocab) {
            panic!("embedding: id {id} out of range for a table of shape {shape:?}");
        }
        let mut out_shape = Shape::from_slice(ids_shape);
        out_shape.push(dim);
        let value = gather(self.value(), ids, dim, &out_shape);
        record(value, &[self], || EmbeddingBackward {
            ids: keep_ids(self.value(), ids),
            dim,
        })
    }
}
