//! What a solve reports: counts, per-sample residual traces, lowest residuals and flags.

/// Statistics of one [`solve`](crate::solve()) call.
///
/// Iterations are counted as in `../shared/BENCH.md`: naive and Anderson make one f call per
/// iteration (`f_evals = iterations`); Broyden makes one extra call for the initial residual
/// (`f_evals = iterations + 1`). Traces hold one entry per f call a sample took part in while
/// it was active, so `abs_trace[b].len()` is `sample_iterations[b]` (naive, Anderson) or
/// `sample_iterations[b] + 1` (Broyden). Trace buffers are allocated once, with capacity
/// `max_iter + 1`, before the first iteration.
#[derive(Clone, Debug, Default)]
pub struct SolveStats {
    /// Batch iterations run.
    pub iterations: usize,
    /// Calls of `f` (each on the whole batch, or with [`solve_rows`](crate::solve_rows) on
    /// the samples still active).
    pub f_evals: usize,
    /// Sample rows passed to `f` over the solve: `B × f_evals`, less the frozen samples that
    /// [`solve_rows`](crate::solve_rows) left out.
    pub f_rows: usize,
    /// Per sample: the batch iteration at which it converged or was frozen by the protective
    /// stop, else `iterations`.
    pub sample_iterations: Vec<usize>,
    /// `[sample][k]`: absolute residual `‖f(z_k) − z_k‖` of the k-th iterate evaluated.
    pub abs_trace: Vec<Vec<f64>>,
    /// `[sample][k]`: relative residual `‖f(z_k) − z_k‖ / (‖f(z_k)‖ + 1e-9)`.
    pub rel_trace: Vec<Vec<f64>>,
    /// Per sample: the smallest finite entry of `abs_trace` (`inf` if none). In the `Abs` stop
    /// mode it is the residual of the returned iterate.
    pub lowest_abs: Vec<f64>,
    /// Per sample: the smallest finite entry of `rel_trace` (`inf` if none). In the `Rel` stop
    /// mode it is the residual of the returned iterate.
    pub lowest_rel: Vec<f64>,
    /// Per sample: the returned iterate's residual (in the stop mode) is below `tol`.
    pub converged: Vec<bool>,
    /// Per sample: frozen by the protective stop (residual grew past `protect ×` its initial
    /// value, or `f(z)` was not finite).
    pub diverged: Vec<bool>,
    /// Anderson steps that fell back to a plain step because the bordered system was singular
    /// or gave non-finite weights, plus Broyden updates skipped because `vᵀΔg` vanished or was
    /// not finite; summed over samples.
    pub fallback_steps: usize,
    /// Broyden: low-rank pairs `(u_i, v_i)` allocated per sample, `min(memory, max_iter)`,
    /// read from the length of the actual buffers. 0 for the other solvers.
    pub lowrank_capacity: usize,
    /// Broyden: the most low-rank pairs any sample held at once (≤ `lowrank_capacity`).
    pub lowrank_pairs_max: usize,
    /// Broyden on the CPU: estimates restarted because a sample's residual grew past
    /// [`RESTART_GROWTH`](crate::RESTART_GROWTH) times its lowest since the last (re)start;
    /// summed over samples. (The GPU solver does not restart yet: always 0 there.)
    pub restarts: usize,
}

impl SolveStats {
    /// Every sample converged.
    pub fn all_converged(&self) -> bool {
        self.converged.iter().all(|&c| c)
    }

    /// Some sample was frozen by the protective stop.
    pub fn any_diverged(&self) -> bool {
        self.diverged.iter().any(|&d| d)
    }

    /// The largest `lowest_rel` over samples (0 for an empty batch): the stop test of
    /// `../shared/BENCH.md` is `max_rel() < tol`.
    pub fn max_rel(&self) -> f64 {
        self.lowest_rel.iter().copied().fold(0.0, f64::max)
    }

    /// The largest `lowest_abs` over samples (0 for an empty batch).
    pub fn max_abs(&self) -> f64 {
        self.lowest_abs.iter().copied().fold(0.0, f64::max)
    }
}
