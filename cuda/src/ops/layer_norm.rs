//! Layer normalisation over the last axis (optionally affine), and its VJPs (kernels in
//! `layer_norm.cu`).
//!
//! The forward pass returns, besides the output, the per-row statistics `(μ, 1/√(var + ε))`
//! (two values a row) that the VJPs read. The γ/β gradients are column sums over the rows,
//! computed deterministically (no atomics).

use super::softmax::{row_count, row_launch, same_len};
use crate::launch::{launch, Arg};
use crate::{GpuBuffer, GpuFloat};
use cudarc::driver::LaunchConfig;

/// Columns per block of the γ/β gradient (`LAYER_NORM_COL_TILE` in layer_norm.cu).
const COL_TILE: usize = 32;
/// Row lanes per block of the γ/β gradient (`LAYER_NORM_ROW_LANES` in layer_norm.cu).
const ROW_LANES: u32 = 16;
/// Most blocks of the γ/β gradient; the kernel loops over the column tiles beyond.
const MAX_TILE_BLOCKS: usize = 1 << 16;

/// Which affine parameter a gradient is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffineParam {
    /// The scale γ: `Σ_rows g ⊙ x̂`.
    Gamma,
    /// The shift β: `Σ_rows g`.
    Beta,
}

fn check_param<T: GpuFloat>(op: &str, p: &GpuBuffer<T>, cols: usize) {
    assert_eq!(
        p.len(),
        cols,
        "{op}: affine parameter of {} values for rows of {cols}",
        p.len()
    );
}

fn check_stats<T: GpuFloat>(op: &str, stats: &GpuBuffer<T>, n_rows: usize) {
    assert_eq!(
        stats.len(),
        2 * n_rows,
        "{op}: statistics of {} values for {n_rows} rows (needs 2 a row)",
        stats.len()
    );
}

/// Normalises every row of `cols` values: `x̂ = (x - μ)·rstd` with `μ = Σx/d`,
/// `rstd = 1/√(Σ(x - μ)²/d + ε)`, then `x̂ ⊙ γ + β` when `affine = Some((γ, β))` (both of
/// `cols` values). Returns the output and the statistics `[μ_0, rstd_0, μ_1, rstd_1, ...]`.
pub fn layer_norm<T: GpuFloat>(
    x: &GpuBuffer<T>,
    cols: usize,
    affine: Option<(&GpuBuffer<T>, &GpuBuffer<T>)>,
    eps: f64,
) -> (GpuBuffer<T>, GpuBuffer<T>) {
    let n_rows = row_count("layer_norm", x.len(), cols);
    if let Some((gamma, beta)) = affine {
        check_param("layer_norm", gamma, cols);
        check_param("layer_norm", beta, cols);
    }
    let y = x.gpu().alloc::<T>(x.len());
    let stats = x.gpu().alloc::<T>(2 * n_rows);
    if n_rows == 0 {
        return (y, stats);
    }
    let (gamma, beta) = affine.map_or((0, 0), |(g, b)| (g.ptr(), b.ptr()));
    launch::<T>(
        x.gpu(),
        "layer_norm_fwd",
        row_launch(n_rows, cols),
        &[
            Arg::Ptr(x.ptr()),
            Arg::Ptr(gamma),
            Arg::Ptr(beta),
            Arg::Ptr(y.ptr()),
            Arg::Ptr(stats.ptr()),
            Arg::len(n_rows),
            Arg::len(cols),
            Arg::real::<T>(eps),
            Arg::flag(affine.is_some()),
        ],
    );
    (y, stats)
}

/// The VJP of [`layer_norm`] with respect to `x`: with `ĝ = g ⊙ γ` (or `g` without `gamma`),
/// `dst (+)= rstd·(ĝ - mean(ĝ) - x̂·mean(ĝ ⊙ x̂))` per row.
pub fn layer_norm_backward_x<T: GpuFloat>(
    g: &GpuBuffer<T>,
    x: &GpuBuffer<T>,
    gamma: Option<&GpuBuffer<T>>,
    stats: &GpuBuffer<T>,
    cols: usize,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    const OP: &str = "layer_norm_backward_x";
    same_len(OP, g, x);
    same_len(OP, g, dst);
    let n_rows = row_count(OP, g.len(), cols);
    check_stats(OP, stats, n_rows);
    if let Some(gm) = gamma {
        check_param(OP, gm, cols);
    }
    if n_rows == 0 {
        return;
    }
    launch::<T>(
        g.gpu(),
        "layer_norm_bwd_x",
        row_launch(n_rows, cols),
        &[
            Arg::Ptr(g.ptr()),
            Arg::Ptr(x.ptr()),
            Arg::Ptr(gamma.map_or(0, GpuBuffer::ptr)),
            Arg::Ptr(stats.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(n_rows),
            Arg::len(cols),
            Arg::flag(gamma.is_some()),
            Arg::flag(acc),
        ],
    );
}

/// The VJP of [`layer_norm`] with respect to γ (`dst (+)= Σ_rows g ⊙ x̂`) or β
/// (`dst (+)= Σ_rows g`); `dst` has `cols` values. Deterministic: every column is summed in a
/// fixed order.
pub fn layer_norm_backward_affine<T: GpuFloat>(
    param: AffineParam,
    g: &GpuBuffer<T>,
    x: &GpuBuffer<T>,
    stats: &GpuBuffer<T>,
    cols: usize,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    const OP: &str = "layer_norm_backward_affine";
    same_len(OP, g, x);
    let n_rows = row_count(OP, g.len(), cols);
    check_stats(OP, stats, n_rows);
    check_param(OP, dst, cols);
    if cols == 0 {
        return;
    }
    let cfg = LaunchConfig {
        grid_dim: (cols.div_ceil(COL_TILE).min(MAX_TILE_BLOCKS) as u32, 1, 1),
        block_dim: (COL_TILE as u32, ROW_LANES, 1),
        shared_mem_bytes: 0,
    };
    launch::<T>(
        g.gpu(),
        "layer_norm_bwd_affine",
        cfg,
        &[
            Arg::Ptr(g.ptr()),
            Arg::Ptr(x.ptr()),
            Arg::Ptr(stats.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(n_rows),
            Arg::len(cols),
            Arg::flag(param == AffineParam::Beta),
            Arg::flag(acc),
        ],
    );
}
