//! Solves whose `f` runs on the samples still active only.
//!
//! A sample that has converged (or was stopped by the protective rule) is frozen: the driver
//! no longer reads its `f(z)`. For a cell whose samples do not interact (every DEQ cell whose
//! batch rows are independent, such as W1's `tanh(z·Wᵀ + x·Uᵀ + b)`), evaluating `f` on the
//! frozen rows is wasted work; [`solve_rows`] hands `f` the active rows stacked into a smaller
//! batch instead, so a solve costs in proportion to the samples that still move. This is a
//! saving that a solver working on opaque batched tensors (torchdeq's) cannot make.

use crate::config::SolverConfig;
use crate::solve::{checked, solve_on_cpu};
use crate::stats::SolveStats;
use deq_autograd::{pool, Float, Tensor};

/// [`solve`](crate::solve()) with `f` evaluated on the active samples only.
///
/// `f(z_active, rows)` receives the active samples of the iterate stacked in batch order as
/// a `[a, ...]` tensor (`a ≤ B`) and their indices `rows` in the batch, and returns `f` of
/// each: the same shape. While every sample is active, `z_active` is the whole iterate (no
/// copy). The statistics are those of [`solve`](crate::solve()), with
/// [`SolveStats::f_rows`] counting the rows actually evaluated.
///
/// The result equals [`solve`](crate::solve())'s when each sample's `f` depends on that
/// sample alone (the caller vouches for that), bit for bit when a row's value does not
/// depend on how many rows are in the call; a product kernel may round a row differently in
/// a smaller batch, and then the two agree to rounding. While some samples are frozen, `f`'s
/// previous whole-batch output stays alive during the call (it receives the new rows), so
/// the peak holds `B + a` output rows where [`solve`](crate::solve()) holds `B`. On a CUDA
/// device every call gets the whole batch (the device solver does not compact yet).
///
/// # Panics
/// As [`solve`](crate::solve()): an invalid `cfg`, or an `f` that returns another shape.
///
/// # Example
/// ```
/// use deq_autograd::Tensor;
/// use deq_solvers::{solve_rows, SolverConfig};
/// // Sample s solves z = c_s z + 1 with c = (0.1, 0.9): the first converges much sooner.
/// let c = [0.1, 0.9];
/// let mut cfg = SolverConfig::naive();
/// cfg.tol = 1e-8;
/// cfg.max_iter = 500;
/// let f = |z: &Tensor<f64>, rows: &[usize]| {
///     Tensor::from_fn(z.shape(), |i| c[rows[i]] * z.data()[i] + 1.0)
/// };
/// let (z, stats) = solve_rows(&cfg, f, &Tensor::zeros(&[2, 1]));
/// assert!((z.data()[0] - 1.0 / 0.9).abs() < 1e-6 && (z.data()[1] - 10.0).abs() < 1e-6);
/// assert!(stats.f_rows < 2 * stats.f_evals);
/// ```
pub fn solve_rows<T: Float>(
    cfg: &SolverConfig,
    mut f: impl FnMut(&Tensor<T>, &[usize]) -> Tensor<T>,
    z0: &Tensor<T>,
) -> (Tensor<T>, SolveStats) {
    let b = if z0.ndim() == 0 { 1 } else { z0.dim(0) };
    let all: Vec<usize> = (0..b).collect();
    let n = z0.numel().checked_div(b).unwrap_or(0);
    if n == 0 || z0.ndim() == 0 {
        return crate::solve(cfg, |z: &Tensor<T>| f(z, &all), z0);
    }
    #[cfg(feature = "cuda")]
    if z0.gpu().is_some() {
        return crate::solve(cfg, |z: &Tensor<T>| f(z, &all), z0);
    }
    if let Err(e) = cfg.validate() {
        panic!("deq_solvers::solve_rows: {e}");
    }
    let mut rows = Vec::with_capacity(b);
    let active_only = move |z: &Tensor<T>, active: &[bool], previous: Option<Tensor<T>>| {
        rows.clear();
        rows.extend((0..b).filter(|&s| active[s]));
        let whole = rows.len() == b;
        let previous = match previous {
            Some(p) if !whole => p,
            p => {
                drop(p);
                return (checked(&mut |z: &Tensor<T>| f(z, &all), z), b);
            }
        };
        let part = gather_rows(z, &rows);
        let f_part = f(&part, &rows);
        assert_eq!(
            f_part.shape(),
            part.shape(),
            "deq_solvers::solve_rows: f returned shape {:?} for {} active samples of shape {:?}",
            f_part.shape(),
            rows.len(),
            part.shape()
        );
        drop(part);
        let mut out = previous;
        scatter_rows(f_part.data(), &rows, out.data_mut());
        (out, rows.len())
    };
    solve_on_cpu(cfg, active_only, z0.clone(), b, n)
}

/// The rows `rows` of `t` (first axis), stacked in that order into a pooled tensor.
///
/// # Panics
/// If `t` is rank 0 or on a CUDA device, or a row index is out of range.
pub fn gather_rows<T: Float>(t: &Tensor<T>, rows: &[usize]) -> Tensor<T> {
    let b = t.dim(0);
    let n = t.numel() / b.max(1);
    let src = t.data();
    assert!(
        rows.iter().all(|&r| r < b),
        "gather_rows: a row index of {rows:?} is out of range for {b} rows"
    );
    let mut data = pool::take::<T>(rows.len() * n);
    if n > 0 {
        for (dst, &r) in data.chunks_exact_mut(n).zip(rows) {
            dst.copy_from_slice(&src[r * n..(r + 1) * n]);
        }
    }
    let mut shape = t.shape().to_vec();
    shape[0] = rows.len();
    Tensor::from_vec(data, &shape)
}

/// Writes the stacked rows `part` back to rows `rows` of `dst`.
fn scatter_rows<T: Float>(part: &[T], rows: &[usize], dst: &mut [T]) {
    let n = part.len() / rows.len().max(1);
    if n == 0 {
        return;
    }
    for (src, &r) in part.chunks_exact(n).zip(rows) {
        dst[r * n..(r + 1) * n].copy_from_slice(src);
    }
}
