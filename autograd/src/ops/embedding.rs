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
