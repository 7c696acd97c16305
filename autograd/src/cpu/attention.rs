//! The CPU loops of the fused causal attention ([`crate::ops::attention`]): one task per
//! `(batch, head)` pair, parallel across rayon's threads, each doing its products with faer's
//! sequential kernel on strided views of the packed projections (no permute copies).
//!
//! Per task, with `K = M + T` keys (memory first) and `Q`, `K_j`, `V_j`, `R_δ` this head's rows:
//! - forward: `S = α·(Q_u·Kᵀ + shift(Q_v·Rᵀ))`, masked where `j > M + i`, `A = softmax(S)`,
//!   `O = A·V`; `shift(P)[i, j] = P[i, M + i − j]`. Only each row's log-sum-exp
//!   `ℓ_i = log Σ_j exp S[i, j]` is kept (`[B, H, T]`), not `A` (`[B, H, T, K]`);
//! - backward from `∂O`: `A = exp(S − ℓ)` recomputed from the scores (one more `Q·Kᵀ` per
//!   task, flash attention's trade of a product for the probability matrix), `∂A = ∂O·Vᵀ`,
//!   `∂V = Aᵀ·∂O`, `G = α·A ⊙ (∂A − rowsum(A ⊙ ∂A))`,
//!   `∂Q_u = G·K`, `∂K = Gᵀ·Q_u`; with relative positions `G'[i, δ] = G[i, M + i − δ]`,
//!   `∂Q_v = G'·R`, `∂R = G'ᵀ·Q_v` (summed over the batch), `∂u = Σ_i ∂Q_u`, `∂v = Σ_i ∂Q_v`,
//!   and `∂Q = ∂Q_u + ∂Q_v`.

use crate::float::Float;
use crate::kernels::clear_upper_simd_state;
use crate::ops::attention_dropout::AttentionDropout;
use faer::reborrow::ReborrowMut;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Sizes of one attention: batch, queries, memory positions, heads, head width, scale.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Batch.
    pub b: usize,
    /// Current (query) positions.
    pub t: usize,
    /// Memory positions before them.
    pub m: usize,
    /// Heads.
    pub heads: usize,
    /// Width of a head.
    pub dh: usize,
    /// Score scale `α`.
    pub scale: f64,
    /// Dropout on the probabilities, if any.
    pub dropout: Option<AttentionDropout>,
}

impl Dims {
    /// Keys per query row: memory and current positions.
    pub fn keys(&self) -> usize {
        self.m + self.t
    }

    /// Model width `H·d_h`.
    pub fn d(&self) -> usize {
        self.heads * self.dh
    }
}

/// The read-only operands: packed `[B, T, 3d]` projections, `[B, M, 2d]` memory keys and
/// values, and the relative-position term `(R [K, d], u [H, d_h], v [H, d_h])`.
#[derive(Clone, Copy)]
pub struct Inputs<'a, T> {
    /// `[B, T, 3d]`: queries, keys, values of the current positions.
    pub qkv: &'a [T],
    /// `[B, M, 2d]`: keys and values of the memory positions (empty when `M = 0`).
    pub mem: &'a [T],
    /// Relative positions, if any.
    pub rel: Option<(&'a [T], &'a [T], &'a [T])>,
}

/// A raw pointer that may cross threads: tasks write disjoint blocks of one buffer.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: only used to write blocks that no other task touches (one `(b, h)` pair each).
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// A `rows × cols` row-major view at `offset` with row stride `stride`.
    ///
    /// # Safety
    /// The view must lie inside the buffer and be written by this task alone.
    unsafe fn view<'a>(
        self,
        offset: usize,
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> MatMut<'a, T> {
        unsafe { MatMut::from_raw_parts_mut(self.0.add(offset), rows, cols, stride as isize, 1) }
    }
}

/// A `rows × cols` row-major view of `data` at `offset` with row stride `stride`.
fn view<T>(data: &[T], offset: usize, rows: usize, cols: usize, stride: usize) -> MatRef<'_, T> {
    if rows == 0 || cols == 0 {
        return MatRef::from_row_major_slice(&data[..0], rows, cols);
    }
    let end = offset + (rows - 1) * stride + cols;
    MatRef::from_row_major_slice_with_stride(&data[offset..end], rows, cols, stride)
}

/// A `rows × cols` row-major view of the start of `data` with row stride `stride`. (faer
/// 0.24's `from_row_major_slice_with_stride_mut` builds a column-major view, so this goes
/// through the column-major constructor and a transpose.)
fn view_mut<T>(data: &mut [T], rows: usize, cols: usize, stride: usize) -> MatMut<'_, T> {
    if rows == 0 || cols == 0 {
        return MatMut::from_row_major_slice_mut(&mut data[..0], rows, cols);
    }
    let end = (rows - 1) * stride + cols;
    MatMut::from_column_major_slice_with_stride_mut(&mut data[..end], cols, rows, stride)
        .transpose_mut()
}

/// `dst (+)= α·a·b` on one thread.
fn gemm<T: Float>(dst: MatMut<'_, T>, acc: bool, a: MatRef<'_, T>, b: MatRef<'_, T>, alpha: T) {
    if dst.nrows() == 0 || dst.ncols() == 0 {
        return;
    }
    let beta = if acc { Accum::Add } else { Accum::Replace };
    faer::linalg::matmul::matmul(dst, beta, a, b, alpha, Par::Seq);
    clear_upper_simd_state();
}

/// One task's views of this head's rows.
struct Head<'a, T> {
    q: MatRef<'a, T>,
    kc: MatRef<'a, T>,
    vc: MatRef<'a, T>,
    km: MatRef<'a, T>,
    vm: MatRef<'a, T>,
    r: Option<MatRef<'a, T>>,
}

fn head<'a, T: Float>(x: &Inputs<'a, T>, d: Dims, bi: usize, h: usize) -> Head<'a, T> {
    let (w, t, m, dh) = (d.d(), d.t, d.m, d.dh);
    let base = bi * t * 3 * w;
    let mbase = bi * m * 2 * w;
    Head {
        q: view(x.qkv, base + h * dh, t, dh, 3 * w),
        kc: view(x.qkv, base + w + h * dh, t, dh, 3 * w),
        vc: view(x.qkv, base + 2 * w + h * dh, t, dh, 3 * w),
        km: view(x.mem, mbase + h * dh, m, dh, 2 * w),
        vm: view(x.mem, mbase + w + h * dh, m, dh, 2 * w),
        r: x.rel.map(|(r, _, _)| view(r, h * dh, d.keys(), dh, w)),
    }
}

/// `Q + bias` (`bias` a `d_h` row) into `dst` (`T × d_h`, contiguous).
fn add_row<T: Float>(dst: &mut [T], q: MatRef<'_, T>, bias: &[T]) {
    let dh = bias.len();
    for (i, row) in dst.chunks_mut(dh).enumerate() {
        // SAFETY: `q` is a row-major view (column stride 1) with `dh` columns.
        let src = unsafe { std::slice::from_raw_parts(q.ptr_at(i, 0), dh) };
        for ((o, &qv), &bv) in row.iter_mut().zip(src).zip(bias) {
            *o = qv + bv;
        }
    }
}

/// Causal softmax of `s` (`T × K`) in place: row `i` sees keys `j ≤ M + i`. Writes each row's
/// log-sum-exp to `lse`.
fn causal_softmax<T: Float>(s: &mut [T], lse: &mut [T], m: usize, kk: usize) {
    for (i, (row, l)) in s.chunks_mut(kk).zip(lse.iter_mut()).enumerate() {
        let valid = (m + i + 1).min(kk);
        let mx = super::rows::max(&row[..valid]);
        let (seen, hidden) = row.split_at_mut(padded_len(valid, kk));
        seen[valid..].fill(-T::INFINITY);
        let sum = super::rows::exp_shifted_in_place(seen, mx);
        *l = mx + sum.ln();
        let inv = T::ONE / sum;
        seen.iter_mut().for_each(|v| *v *= inv);
        hidden.fill(T::ZERO);
    }
}

/// A row's `valid` keys rounded up to whole chunks of the row kernels' lanes (at most the
/// `kk` of the row): the exponential runs over the padding, filled with `-∞` (whose
/// exponential is exactly 0), where a causal row of any length would otherwise end in up to
/// 15 scalar exponentials (a third of the softmax's time at `T = 128`).
fn padded_len(valid: usize, kk: usize) -> usize {
    valid.next_multiple_of(super::rows::LANES).min(kk)
}

/// The probabilities again from the scores `s` (`T × K`, in place) and the rows'
/// log-sum-exp: `A[i, j] = exp(S[i, j] − ℓ_i)` where row `i` sees key `j`, 0 elsewhere.
fn causal_probs<T: Float>(s: &mut [T], lse: &[T], m: usize, kk: usize) {
    for (i, (row, &l)) in s.chunks_mut(kk).zip(lse).enumerate() {
        let valid = (m + i + 1).min(kk);
        let (seen, hidden) = row.split_at_mut(padded_len(valid, kk));
        seen[valid..].fill(-T::INFINITY);
        super::rows::exp_shifted_in_place(seen, l);
        hidden.fill(T::ZERO);
    }
}

/// `Ã = A ⊙ M/(1 − p)` in place on one task's probabilities (`T × K`, the task's first row
/// being row `row0` of the `[B, H, T, K]` mask), on the keys each row sees.
fn drop_rows<T: Float>(drop: &AttentionDropout, a: &mut [T], row0: usize, m: usize, kk: usize) {
    for (i, row) in a.chunks_mut(kk).enumerate() {
        let valid = (m + i + 1).min(kk);
        drop.apply_row(row0 + i, kk, &mut row[..valid]);
    }
}

/// Query rows per block: a block of queries `[i0, i1)` only sees keys `j < M + i1`, so the
/// products skip the masked upper triangle block by block (about 3/8 of the attention FLOPs at
/// `T = 128`).
const ROW_BLOCK: usize = 32;

/// The query row blocks of `t` rows.
fn blocks(t: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..t)
        .step_by(ROW_BLOCK)
        .map(move |i0| i0..(i0 + ROW_BLOCK).min(t))
}

/// This task's queries with the biases added: `Q_u = Q + u` (`qu`, or the queries in place
/// without relative positions) and `Q_v = Q + v` (with relative positions). The buffers come
/// from the pool; give them back with [`give_queries`].
struct Queries<T: Float> {
    qu: Vec<T>,
    qv: Option<Vec<T>>,
}

fn queries<T: Float>(x: &Inputs<'_, T>, hd: &Head<'_, T>, dh: usize, h: usize) -> Queries<T> {
    let t = hd.q.nrows();
    let mut qu = crate::pool::take(if x.rel.is_some() { t * dh } else { 0 });
    if let Some((_, u, _)) = x.rel {
        add_row(&mut qu, hd.q, &u[h * dh..(h + 1) * dh]);
    }
    let qv = x.rel.map(|(_, _, v)| {
        let mut qv = crate::pool::take(t * dh);
        add_row(&mut qv, hd.q, &v[h * dh..(h + 1) * dh]);
        qv
    });
    Queries { qu, qv }
}

impl<T: Float> Queries<T> {
    /// `Q_u` as a `T × d_h` view.
    fn qu<'a>(&'a self, hd: &Head<'a, T>) -> MatRef<'a, T> {
        if self.qv.is_some() {
            MatRef::from_row_major_slice(&self.qu, hd.q.nrows(), hd.q.ncols())
        } else {
            hd.q
        }
    }

    fn give(self) {
        crate::pool::give(self.qu);
        if let Some(qv) = self.qv {
            crate::pool::give(qv);
        }
    }
}

/// The scaled scores `S` of one task into `s` (`T × K`, row-major): every key a row sees is
/// written (and some masked ones of its block, which the softmax overwrites).
fn scores<T: Float>(d: Dims, hd: &Head<'_, T>, q: &Queries<T>, s: &mut [T]) {
    let (t, m, kk, dh) = (d.t, d.m, d.keys(), d.dh);
    let alpha = T::from_f64(d.scale);
    let qu = q.qu(hd);
    let mut p = crate::pool::take(if q.qv.is_some() { ROW_BLOCK * kk } else { 0 });
    for blk in blocks(t) {
        let (i0, rows, kv) = (blk.start, blk.len(), m + blk.end);
        let qb = qu.subrows(i0, rows);
        {
            let mut sm = MatMut::from_row_major_slice_mut(&mut s[..t * kk], t, kk);
            let sb = sm.rb_mut().submatrix_mut(i0, 0, rows, kv);
            let (smem, scur) = sb.split_at_col_mut(m);
            gemm(smem, false, qb, hd.km.transpose(), alpha);
            gemm(
                scur,
                false,
                qb,
                hd.kc.subrows(0, blk.end).transpose(),
                alpha,
            );
        }
        if let (Some(qv), Some(r)) = (&q.qv, hd.r) {
            // P[i, δ] = α·(q_i + v)·R_δ for the distances δ < kv this block sees.
            gemm(
                view_mut(&mut p, rows, kv, kk),
                false,
                MatRef::from_row_major_slice(&qv[i0 * dh..blk.end * dh], rows, dh),
                r.subrows(0, kv).transpose(),
                alpha,
            );
            for (bi_row, i) in blk.clone().enumerate() {
                let srow = &mut s[i * kk..i * kk + m + i + 1];
                let prow = &p[bi_row * kk..bi_row * kk + m + i + 1];
                for (j, s) in srow.iter_mut().enumerate() {
                    *s += prow[m + i - j];
                }
            }
        }
    }
    crate::pool::give(p);
}

/// The forward pass: writes `out` (`[B, T, d]`) and each score row's log-sum-exp `lse`
/// (`[B, H, T]`), all the backward pass needs besides the inputs.
pub fn forward<T: Float>(d: Dims, x: Inputs<'_, T>, out: &mut [T], lse: &mut [T]) {
    let (t, m, kk, dh, w) = (d.t, d.m, d.keys(), d.dh, d.d());
    let out_ptr = Shared(out.as_mut_ptr());
    lse.par_chunks_mut(t).enumerate().for_each(|(task, lse)| {
        let (bi, h) = (task / d.heads, task % d.heads);
        let hd = head(&x, d, bi, h);
        let q = queries(&x, &hd, dh, h);
        let mut a = crate::pool::take(t * kk);
        scores(d, &hd, &q, &mut a);
        q.give();
        causal_softmax(&mut a, lse, m, kk);
        if let Some(drop) = d.dropout {
            drop_rows(&drop, &mut a, task * t, m, kk);
        }
        let a_view = MatRef::from_row_major_slice(&a, t, kk);
        // SAFETY: this task alone writes head h's columns of batch bi's rows.
        let mut o = unsafe { out_ptr.view(bi * t * w + h * dh, t, dh, w) };
        for blk in blocks(t) {
            let (i0, rows) = (blk.start, blk.len());
            let ab = a_view.submatrix(i0, 0, rows, m + blk.end);
            let (am, ac) = ab.split_at_col(m);
            let mut ob = o.rb_mut().subrows_mut(i0, rows);
            gemm(ob.rb_mut(), false, ac, hd.vc.subrows(0, blk.end), T::ONE);
            if m > 0 {
                gemm(ob.rb_mut(), true, am, hd.vm, T::ONE);
            }
        }
        crate::pool::give(a);
    });
}

/// Gradient destinations of the backward pass, each with whether to accumulate.
pub struct Grads<'a, T> {
    /// `[B, T, 3d]`.
    pub qkv: Option<(&'a mut [T], bool)>,
    /// `[B, M, 2d]`.
    pub mem: Option<(&'a mut [T], bool)>,
    /// `[K, d]`.
    pub r: Option<(&'a mut [T], bool)>,
    /// `[H, d_h]`.
    pub u: Option<(&'a mut [T], bool)>,
    /// `[H, d_h]`.
    pub v: Option<(&'a mut [T], bool)>,
}

/// The backward pass from `dout` (`[B, T, d]`) and the forward's log-sum-exp rows.
pub fn backward<T: Float>(d: Dims, x: Inputs<'_, T>, lse: &[T], dout: &[T], grads: Grads<'_, T>) {
    let (t, m, kk, dh, w, heads) = (d.t, d.m, d.keys(), d.dh, d.d(), d.heads);
    let alpha = T::from_f64(d.scale);
    let tasks = d.b * heads;
    let rel = x.rel.is_some();
    let want_rel = rel && (grads.r.is_some() || grads.u.is_some() || grads.v.is_some());
    let (qkv_acc, mem_acc) = (
        grads.qkv.as_ref().is_some_and(|g| g.1),
        grads.mem.as_ref().is_some_and(|g| g.1),
    );
    let qkv_ptr = grads.qkv.map(|(g, _)| Shared(g.as_mut_ptr()));
    let mem_ptr = grads.mem.map(|(g, _)| Shared(g.as_mut_ptr()));
    // Per-task parts of the gradients shared by the batch: ∂R (K × d_h), ∂u, ∂v (d_h each).
    let part = if want_rel { kk * dh + 2 * dh } else { 0 };
    let mut parts = crate::pool::take_zeroed::<T>(tasks * part);
    let body = |task: usize, part: &mut [T]| {
        let (bi, h) = (task / heads, task % heads);
        let hd = head(&x, d, bi, h);
        let q = queries(&x, &hd, dh, h);
        let mut probs = crate::pool::take(t * kk);
        scores(d, &hd, &q, &mut probs);
        causal_probs(&mut probs, &lse[task * t..(task + 1) * t], m, kk);
        // With dropout, the dropped weights Ã (the products' operand) beside A.
        let dropped = d.dropout.map(|drop| {
            let mut at = crate::pool::take(t * kk);
            at.copy_from_slice(&probs);
            drop_rows(&drop, &mut at, task * t, m, kk);
            at
        });
        let ad = &probs[..];
        let atd = dropped.as_deref().unwrap_or(ad);
        let a = MatRef::from_row_major_slice(atd, t, kk);
        let go = view(dout, bi * t * w + h * dh, t, dh, w);
        // SAFETY (every view below): head h's columns of batch bi belong to this task alone.
        let dqkv = |col: usize| {
            qkv_ptr.map(|p| unsafe { p.view(bi * t * 3 * w + col + h * dh, t, dh, 3 * w) })
        };
        let dmem = |col: usize| {
            mem_ptr
                .filter(|_| m > 0)
                .map(|p| unsafe { p.view(bi * m * 2 * w + col + h * dh, m, dh, 2 * w) })
        };
        let (mut dvc, mut dvm) = (dqkv(2 * w), dmem(w));
        let (mut dkc, mut dkm) = (dqkv(w), dmem(0));
        // Q_u (the queries plus u with relative positions) and Q_v.
        let qu_view = q.qu(&hd);
        let mut g = crate::pool::take(t * kk);
        let mut gp = crate::pool::take_zeroed(if x.rel.is_some() { t * kk } else { 0 });
        let mut dq = crate::pool::take(t * dh);
        let mut dqv = crate::pool::take(if x.rel.is_some() { t * dh } else { 0 });
        // Blocks last first: the last block sees every key, so its products write every row
        // of ∂V, ∂K and ∂R, and the earlier blocks add to the rows they see.
        for (n, blk) in blocks(t).collect::<Vec<_>>().into_iter().rev().enumerate() {
            let (i0, rows, kv) = (blk.start, blk.len(), m + blk.end);
            let first = n == 0;
            let ab = a.submatrix(i0, 0, rows, kv);
            let (am, ac) = ab.split_at_col(m);
            let gob = go.subrows(i0, rows);
            let (vc, kc) = (hd.vc.subrows(0, blk.end), hd.kc.subrows(0, blk.end));
            // ∂V = Aᵀ·∂O.
            if let Some(dv) = dvc.as_mut() {
                let dv = dv.rb_mut().subrows_mut(0, blk.end);
                gemm(dv, qkv_acc || !first, ac.transpose(), gob, T::ONE);
            }
            if let Some(dv) = dvm.as_mut() {
                gemm(dv.rb_mut(), mem_acc || !first, am.transpose(), gob, T::ONE);
            }
            // G = α·A ⊙ (∂A − rowsum(A ⊙ ∂A)), with ∂A = ∂O·Vᵀ, on the keys each row sees;
            // with dropout ∂A = M/(1 − p) ⊙ ∂Ã, so G = α·(Ã ⊙ ∂Ã − A·rowsum(Ã ⊙ ∂Ã)).
            {
                let gb = view_mut(&mut g[i0 * kk..], rows, kv, kk);
                let (gmm, gmc) = gb.split_at_col_mut(m);
                gemm(gmm, false, gob, hd.vm.transpose(), T::ONE);
                gemm(gmc, false, gob, vc.transpose(), T::ONE);
            }
            for i in blk.clone() {
                let valid = m + i + 1;
                let (grow, arow) = (&mut g[i * kk..i * kk + kk], &ad[i * kk..i * kk + valid]);
                if dropped.is_some() {
                    let trow = &atd[i * kk..i * kk + valid];
                    let dot = super::rows::dot(&grow[..valid], trow);
                    for ((gv, &av), &tv) in grow[..valid].iter_mut().zip(arow).zip(trow) {
                        *gv = alpha * (tv * *gv - av * dot);
                    }
                } else {
                    let dot = super::rows::dot(&grow[..valid], arow);
                    for (gv, &av) in grow[..valid].iter_mut().zip(arow) {
                        *gv = alpha * av * (*gv - dot);
                    }
                }
                grow[valid..].fill(T::ZERO);
            }
            let gb = MatRef::from_row_major_slice_with_stride(
                &g[i0 * kk..(i0 + rows - 1) * kk + kv],
                rows,
                kv,
                kk,
            );
            let (gmm, gmc) = gb.split_at_col(m);
            let qub = qu_view.subrows(i0, rows);
            // ∂K = Gᵀ·Q_u.
            if let Some(dk) = dkc.as_mut() {
                let dk = dk.rb_mut().subrows_mut(0, blk.end);
                gemm(dk, qkv_acc || !first, gmc.transpose(), qub, T::ONE);
            }
            if let Some(dk) = dkm.as_mut() {
                gemm(dk.rb_mut(), mem_acc || !first, gmm.transpose(), qub, T::ONE);
            }
            // ∂Q_u = G·K.
            {
                let mut dqb = view_mut(&mut dq[i0 * dh..], rows, dh, dh);
                gemm(dqb.rb_mut(), false, gmc, kc, T::ONE);
                if m > 0 {
                    gemm(dqb.rb_mut(), true, gmm, hd.km, T::ONE);
                }
            }
            if let Some(r) = hd.r {
                // G'[i, δ] = G[i, M + i − δ] for δ ≤ M + i; ∂Q_v = G'·R.
                for i in blk.clone() {
                    let (src, dst) = (&g[i * kk..i * kk + m + i + 1], &mut gp[i * kk..i * kk + kk]);
                    for (j, &gv) in src.iter().enumerate() {
                        dst[m + i - j] = gv;
                    }
                }
                let gpb = MatRef::from_row_major_slice_with_stride(
                    &gp[i0 * kk..(i0 + rows - 1) * kk + kv],
                    rows,
                    kv,
                    kk,
                );
                let r = r.subrows(0, kv);
                gemm(
                    view_mut(&mut dqv[i0 * dh..], rows, dh, dh),
                    false,
                    gpb,
                    r,
                    T::ONE,
                );
                if let Some(qv) = q.qv.as_ref().filter(|_| want_rel) {
                    // This task's part of ∂R_h = G'ᵀ·Q_v.
                    let dr = view_mut(part, kv, dh, dh);
                    let qvb = MatRef::from_row_major_slice(&qv[i0 * dh..blk.end * dh], rows, dh);
                    gemm(dr, !first, gpb.transpose(), qvb, T::ONE);
                }
            }
        }
        if want_rel {
            // ∂u = Σ_i ∂Q_u, ∂v = Σ_i ∂Q_v.
            let (du, dvb) = part[kk * dh..kk * dh + 2 * dh].split_at_mut(dh);
            for (a_row, b_row) in dq.chunks(dh).zip(dqv.chunks(dh)) {
                du.iter_mut().zip(a_row).for_each(|(o, &v)| *o += v);
                dvb.iter_mut().zip(b_row).for_each(|(o, &v)| *o += v);
            }
        }
        if x.rel.is_some() {
            dq.iter_mut().zip(&dqv).for_each(|(o, &v)| *o += v);
        }
        if let Some(dst) = dqkv(0) {
            for (i, src) in dq.chunks_exact(dh).enumerate() {
                // SAFETY: `dst` is this task's row-major view (column stride 1) of `dh`
                // columns; row `i` is `dh` contiguous entries that no other task writes.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.ptr_at_mut(i, 0), dh) };
                if qkv_acc {
                    row.iter_mut().zip(src).for_each(|(o, &v)| *o += v);
                } else {
                    row.copy_from_slice(src);
                }
            }
        }
        q.give();
        for buf in [dq, dqv, probs, g, gp].into_iter().chain(dropped) {
            crate::pool::give(buf);
        }
    };
    if part > 0 {
        parts
            .par_chunks_mut(part)
            .enumerate()
            .for_each(|(task, p)| body(task, p));
    } else {
        (0..tasks)
            .into_par_iter()
            .for_each(|task| body(task, &mut []));
    }
    if want_rel {
        reduce_over_batch(d, &parts, part, grads.r, grads.u, grads.v);
    }
    crate::pool::give(parts);
}

/// Sums the per-task parts of `∂R`, `∂u`, `∂v` over the batch into their destinations.
fn reduce_over_batch<T: Float>(
    d: Dims,
    parts: &[T],
    part: usize,
    r: Option<(&mut [T], bool)>,
    u: Option<(&mut [T], bool)>,
    v: Option<(&mut [T], bool)>,
) {
    let (kk, dh, w, heads) = (d.keys(), d.dh, d.d(), d.heads);
    let sum = |h: usize, offset: usize, len: usize, out: &mut [T]| {
        for (bi, chunk) in parts.chunks(part).skip(h).step_by(heads).enumerate() {
            let src = &chunk[offset..offset + len];
            if bi == 0 {
                out.copy_from_slice(src);
            } else {
                out.iter_mut().zip(src).for_each(|(o, &s)| *o += s);
            }
        }
    };
    let mut row = vec![T::ZERO; kk * dh];
    if let Some((dst, acc)) = r {
        for h in 0..heads {
            sum(h, 0, kk * dh, &mut row);
            for j in 0..kk {
                let (o, s) = (
                    &mut dst[j * w + h * dh..j * w + (h + 1) * dh],
                    &row[j * dh..(j + 1) * dh],
                );
                if acc {
                    o.iter_mut().zip(s).for_each(|(o, &s)| *o += s);
                } else {
                    o.copy_from_slice(s);
                }
            }
        }
    }
    for (target, offset) in [(u, kk * dh), (v, kk * dh + dh)] {
        if let Some((dst, acc)) = target {
            for h in 0..heads {
                sum(h, offset, dh, &mut row[..dh]);
                let o = &mut dst[h * dh..(h + 1) * dh];
                if acc {
                    o.iter_mut().zip(&row[..dh]).for_each(|(o, &s)| *o += s);
                } else {
                    o.copy_from_slice(&row[..dh]);
                }
            }
        }
    }
}

/// Transformer-XL's relative shift of `[.., T, K]` scores (rows of `k` values, `t` query rows
/// per block, `mem = K − T`): `out[.., i, j] = x[.., i, mem + i − j]` for `j ≤ mem + i`. `out`
/// must hold zeros (the entries past the diagonal stay 0).
pub fn rel_shift<T: Float>(x: &[T], t: usize, k: usize, mem: usize, out: &mut [T]) {
    for row in 0..x.len() / k.max(1) {
        let i = row % t;
        let (xr, or) = (&x[row * k..(row + 1) * k], &mut out[row * k..(row + 1) * k]);
        for j in 0..=(mem + i).min(k - 1) {
            or[j] = xr[mem + i - j];
        }
    }
}

/// The VJP of [`rel_shift`]: `dst[.., i, mem + i − j] (+)= g[.., i, j]`.
pub fn rel_shift_backward<T: Float>(
    g: &[T],
    t: usize,
    k: usize,
    mem: usize,
    dst: &mut [T],
    acc: bool,
) {
    crate::kernels::prepare(dst, acc);
    for row in 0..g.len() / k.max(1) {
        let i = row % t;
        let (gr, dr) = (&g[row * k..(row + 1) * k], &mut dst[row * k..(row + 1) * k]);
        for j in 0..=(mem + i).min(k - 1) {
            dr[mem + i - j] += gr[j];
        }
    }
}
