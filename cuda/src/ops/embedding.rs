//! Embedding gather and its scatter-add VJP (kernels in `embedding.cu`).
//!
//! The VJP is deterministic: a [`ScatterPlan`], built on the host from the ids, lists for every
//! distinct id the positions that gathered it, and each gradient element sums its positions in
//! increasing order (the order of the CPU), so no atomics are needed and repeated runs agree
//! to the bit.

use crate::launch::{launch, linear, Arg};
use crate::{Gpu, GpuBuffer, GpuFloat, IndexBuffer};

/// `values` as an `i32` device buffer (token ids, class targets); panics (naming `op`) if one
/// does not fit in an `i32`. Range checks against a table or a class count are the caller's.
pub fn upload_indices(gpu: &Gpu, values: &[usize], op: &str) -> IndexBuffer {
    let v: Vec<i32> = values.iter().map(|&i| to_i32(op, i)).collect();
    gpu.upload(&v)
}

fn to_i32(op: &str, i: usize) -> i32 {
    i32::try_from(i).unwrap_or_else(|_| panic!("{op}: index {i} does not fit in an i32"))
}

/// Rows `ids` of the table `w` (`[vocab, dim]` row-major) into a new `[ids.len(), dim]` buffer.
/// Every id must be below `vocab` (validate on the host: the kernel does not check).
pub fn gather<T: GpuFloat>(w: &GpuBuffer<T>, ids: &IndexBuffer, dim: usize) -> GpuBuffer<T> {
    assert!(
        if dim == 0 {
            w.is_empty()
        } else {
            w.len().is_multiple_of(dim)
        },
        "embedding gather: table of {} values is not rows of {dim}",
        w.len()
    );
    let n = ids.len() * dim;
    let out = w.gpu().alloc::<T>(n);
    if n == 0 {
        return out;
    }
    launch::<T>(
        w.gpu(),
        "embedding_gather",
        linear(n),
        &[
            Arg::Ptr(w.ptr()),
            Arg::Ptr(ids.ptr()),
            Arg::Ptr(out.ptr()),
            Arg::len(ids.len()),
            Arg::len(dim),
        ],
    );
    out
}

/// The positions of each distinct id, on the device: what [`scatter_add`] reads.
#[derive(Debug)]
pub struct ScatterPlan {
    /// `offsets[n_uniq + 1]`, `uniq[n_uniq]`, `positions[n_ids]` (layout of embedding.cu).
    plan: IndexBuffer,
    n_uniq: usize,
    n_ids: usize,
    /// One past the largest id (0 without ids): the least number of table rows.
    rows_needed: usize,
}

impl ScatterPlan {
    /// Groups the positions `0..ids.len()` by id (ascending ids, positions ascending within an
    /// id) and uploads the grouping.
    pub fn new(gpu: &Gpu, ids: &[usize]) -> ScatterPlan {
        const OP: &str = "embedding scatter plan";
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&j| ids[j]); // stable: positions stay ascending within an id
        let mut offsets = Vec::new();
        let mut uniq = Vec::new();
        for (p, &j) in order.iter().enumerate() {
            if uniq.last().map(|&u: &i32| u as usize) != Some(ids[j]) {
                offsets.push(to_i32(OP, p));
                uniq.push(to_i32(OP, ids[j]));
            }
        }
        offsets.push(to_i32(OP, ids.len()));
        let n_uniq = uniq.len();
        let mut plan = offsets;
        plan.extend(uniq);
        plan.extend(order.iter().map(|&j| to_i32(OP, j)));
        ScatterPlan {
            plan: gpu.upload(&plan),
            n_uniq,
            n_ids: ids.len(),
            rows_needed: ids.iter().max().map_or(0, |&m| m + 1),
        }
    }

    /// The number of ids the plan was built from.
    pub fn len(&self) -> usize {
        self.n_ids
    }

    /// True when the plan was built from no ids.
    pub fn is_empty(&self) -> bool {
        self.n_ids == 0
    }
}

/// The VJP of [`gather`]: `dst (+)= Σ_j e_{ids[j]} ⊗ g[j]`, i.e. row `j` of the cotangent `g`
/// (`[ids.len(), dim]`) added into row `ids[j]` of `dst` (`[vocab, dim]`). Without `acc` the
/// rows of ids that do not occur are zeroed.
pub fn scatter_add<T: GpuFloat>(
    g: &GpuBuffer<T>,
    plan: &ScatterPlan,
    dim: usize,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    assert_eq!(
        g.len(),
        plan.n_ids * dim,
        "embedding scatter_add: cotangent of {} values for {} ids of {dim}",
        g.len(),
        plan.n_ids
    );
    if dim == 0 {
        assert!(
            dst.is_empty(),
            "embedding scatter_add: rows of 0 values in a gradient of {}",
            dst.len()
        );
        return;
    }
    assert!(
        dst.len().is_multiple_of(dim) && dst.len() / dim >= plan.rows_needed,
        "embedding scatter_add: gradient of {} values for ids up to {} in rows of {dim}",
        dst.len(),
        plan.rows_needed as i64 - 1
    );
    if !acc {
        dst.fill_zero();
    }
    let n = plan.n_uniq * dim;
    if n == 0 {
        return;
    }
    launch::<T>(
        g.gpu(),
        "embedding_scatter",
        linear(n),
        &[
            Arg::Ptr(g.ptr()),
            Arg::Ptr(plan.plan.ptr()),
            Arg::len(plan.n_uniq),
            Arg::len(dim),
            Arg::Ptr(dst.ptr()),
            Arg::flag(acc),
        ],
    );
}
