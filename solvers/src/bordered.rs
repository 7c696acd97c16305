//! Anderson's mixing weights from the bordered system, solved with faer's LU in place.
//!
//! The weights minimise `‖Σ α_i G_i‖² + λ‖α‖²` subject to `Σ α_i = 1`. With the Lagrange
//! multiplier `ν` the optimality conditions are the bordered (saddle-point) system
//!
//! ```text
//! [ 0   1ᵀ         ] [ ν ]   [ 1 ]
//! [ 1   G Gᵀ + λI  ] [ α ] = [ 0 ]
//! ```
//!
//! of size `(n + 1)²`, `n ≤ m`. It is factored by LU with partial pivoting in f64 into buffers
//! allocated once, so a solve allocates nothing.

use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::lu::partial_pivoting::{factor, solve};
use faer::{MatMut, Par};

/// A pivot this small relative to the largest one marks the system as singular.
const PIVOT_RTOL: f64 = 64.0 * f64::EPSILON;

/// Scratch for bordered systems of up to `cap` weights.
pub(crate) struct Bordered {
    lu: Vec<f64>,
    rhs: Vec<f64>,
    perm: Vec<usize>,
    perm_inv: Vec<usize>,
    mem: MemBuffer,
}

impl Bordered {
    /// Buffers for up to `cap` weights (a matrix of `(cap + 1)²`).
    pub(crate) fn new(cap: usize) -> Self {
        let dim = cap + 1;
        let req = StackReq::any_of(&[
            factor::lu_in_place_scratch::<usize, f64>(dim, dim, Par::Seq, Default::default()),
            solve::solve_in_place_scratch::<usize, f64>(dim, 1, Par::Seq),
        ]);
        Bordered {
            lu: vec![0.0; dim * dim],
            rhs: vec![0.0; dim],
            perm: vec![0; dim],
            perm_inv: vec![0; dim],
            mem: MemBuffer::new(req),
        }
    }

    /// The weights `α` (length `n`) for the Gram matrix `gram` (`G Gᵀ`, row-major with row
    /// stride `stride`, leading `n × n` block used) and ridge `lam`; `None` when the system
    /// is singular to working precision or the weights are not finite, so the caller can take
    /// a plain step instead.
    pub(crate) fn weights(
        &mut self,
        gram: &[f64],
        stride: usize,
        n: usize,
        lam: f64,
    ) -> Option<&[f64]> {
        let dim = n + 1;
        let a = &mut self.lu[..dim * dim];
        // Column-major fill; the matrix is symmetric.
        a[0] = 0.0;
        for i in 0..n {
            a[i + 1] = 1.0;
            a[(i + 1) * dim] = 1.0;
            for j in 0..n {
                let ridge = if i == j { lam } else { 0.0 };
                a[(j + 1) * dim + (i + 1)] = gram[i * stride + j] + ridge;
            }
        }
        if a.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut mat = MatMut::from_column_major_slice_mut(a, dim, dim);
        let stack = MemStack::new(&mut self.mem);
        let (_, perm) = factor::lu_in_place(
            mat.as_mut(),
            &mut self.perm[..dim],
            &mut self.perm_inv[..dim],
            Par::Seq,
            stack,
            Default::default(),
        );
        let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
        for k in 0..dim {
            let p = mat[(k, k)].abs();
            lo = lo.min(p);
            hi = hi.max(p);
        }
        if !(lo.is_finite() && hi.is_finite()) || lo <= PIVOT_RTOL * hi {
            return None;
        }
        let rhs = &mut self.rhs[..dim];
        rhs.fill(0.0);
        rhs[0] = 1.0;
        solve::solve_in_place(
            mat.as_ref(),
            mat.as_ref(),
            perm,
            MatMut::from_column_major_slice_mut(rhs, dim, 1),
            Par::Seq,
            stack,
        );
        let alpha = &self.rhs[1..dim];
        alpha.iter().all(|v| v.is_finite()).then_some(alpha)
    }
}
