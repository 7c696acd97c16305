//! CPU kernels shared by the ops: element-wise loops (parallel above a size threshold) and
//! matrix products through faer.

use crate::float::Float;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use std::cell::Cell;

/// Element counts at or above this run element-wise loops on rayon's pool.
pub const PAR_MIN: usize = 1 << 16;
const CHUNK: usize = 1 << 13;

/// `f` applied to every value of `src`.
pub fn map<T: Float>(src: &[T], f: impl Fn(T) -> T + Sync + Send) -> Vec<T> {
    let mut out = crate::pool::take(src.len());
    map_into(&mut out, src, f, false);
    out
}

/// `dst[i] (+)= f(src[i])`: replaces when `acc` is false, accumulates when true.
pub fn map_into<T: Float>(dst: &mut [T], src: &[T], f: impl Fn(T) -> T + Sync + Send, acc: bool) {
    debug_assert_eq!(dst.len(), src.len());
    let body = |d: &mut [T], s: &[T]| {
        if acc {
            d.iter_mut().zip(s).for_each(|(d, &s)| *d += f(s));
        } else {
            d.iter_mut().zip(s).for_each(|(d, &s)| *d = f(s));
        }
    };
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| body(d, s));
    } else {
        body(dst, src);
    }
}

/// `dst[i] (+)= f(a[i], b[i])`.
pub fn zip_into<T: Float>(
    dst: &mut [T],
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> T + Sync + Send,
    acc: bool,
) {
    debug_assert!(dst.len() == a.len() && a.len() == b.len());
    let body = |d: &mut [T], a: &[T], b: &[T]| {
        if acc {
            for i in 0..d.len() {
                d[i] += f(a[i], b[i]);
            }
        } else {
            for i in 0..d.len() {
                d[i] = f(a[i], b[i]);
            }
        }
    };
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(d, (a, b))| body(d, a, b));
    } else {
        body(dst, a, b);
    }
}

/// `dst[i] (+)= f(a[i], b[i], c[i])`.
pub fn zip3_into<T: Float>(
    dst: &mut [T],
    a: &[T],
    b: &[T],
    c: &[T],
    f: impl Fn(T, T, T) -> T + Sync + Send,
    acc: bool,
) {
    debug_assert!(dst.len() == a.len() && a.len() == b.len() && b.len() == c.len());
    let body = |d: &mut [T], a: &[T], b: &[T], c: &[T]| {
        if acc {
            for i in 0..d.len() {
                d[i] += f(a[i], b[i], c[i]);
            }
        } else {
            for i in 0..d.len() {
                d[i] = f(a[i], b[i], c[i]);
            }
        }
    };
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(CHUNK)
            .zip(
                a.par_chunks(CHUNK)
                    .zip(b.par_chunks(CHUNK).zip(c.par_chunks(CHUNK))),
            )
            .for_each(|(d, (a, (b, c)))| body(d, a, b, c));
    } else {
        body(dst, a, b, c);
    }
}

/// Copies (`acc` false) or adds (`acc` true) `src` into `dst`.
pub fn write<T: Float>(dst: &mut [T], src: &[T], acc: bool) {
    if acc {
        zip_into_self(dst, src, |d, s| d + s);
    } else {
        copy(dst, src);
    }
}

/// Copies at or above this many values are split across rayon's threads: one thread's copy of
/// a buffer beyond the caches streams at about 60% of two threads' bandwidth (a 40 MB
/// cotangent copy took a quarter of the `[1024, 10000]` log-softmax VJP), while below it the
/// copy is faster than the threads' wake-up.
const COPY_PAR_MIN: usize = 1 << 20;

/// `dst.copy_from_slice(src)`, split across the threads for large buffers.
pub fn copy<T: Float>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "copy: lengths");
    if dst.len() >= COPY_PAR_MIN && rayon::current_num_threads() > 1 {
        dst.par_chunks_mut(COPY_PAR_MIN / 4)
            .zip(src.par_chunks(COPY_PAR_MIN / 4))
            .for_each(|(d, s)| d.copy_from_slice(s));
    } else {
        dst.copy_from_slice(src);
    }
}

/// `dst[i] = f(dst[i], src[i])`.
pub fn zip_into_self<T: Float>(dst: &mut [T], src: &[T], f: impl Fn(T, T) -> T + Sync + Send) {
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d = f(*d, s)));
    } else {
        dst.iter_mut().zip(src).for_each(|(d, &s)| *d = f(*d, s));
    }
}

/// `x[i] = f(x[i])` in place.
pub fn map_self<T: Float>(x: &mut [T], f: impl Fn(T) -> T + Sync + Send) {
    if x.len() >= PAR_MIN {
        x.par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
    } else {
        x.iter_mut().for_each(|v| *v = f(*v));
    }
}

/// `dst[i] = f(dst[i], a[i], b[i])` in place.
pub fn zip_into_self3<T: Float>(
    dst: &mut [T],
    a: &[T],
    b: &[T],
    f: impl Fn(T, T, T) -> T + Sync + Send,
) {
    let body = |d: &mut [T], a: &[T], b: &[T]| {
        for i in 0..d.len() {
            d[i] = f(d[i], a[i], b[i]);
        }
    };
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(d, (a, b))| body(d, a, b));
    } else {
        body(dst, a, b);
    }
}

/// Zeroes `dst` unless accumulating (so that later code can always add).
pub fn prepare<T: Float>(dst: &mut [T], acc: bool) {
    if !acc {
        dst.fill(T::ZERO);
    }
}

thread_local! {
    static MATMUL_CALLS: Cell<u64> = const { Cell::new(0) };
    static MATMUL_FLOPS: Cell<u64> = const { Cell::new(0) };
}

/// Matrix-product counters of the current thread: `(calls, flops)`.
///
/// Every matrix product issued by the engine on this thread (forward or VJP, batched products
/// counting once per call) adds to them. Tests use them to prove that a pruned VJP skips the
/// weight-gradient products; benchmarks use them to report achieved GFLOP/s.
pub fn matmul_counters() -> (u64, u64) {
    (MATMUL_CALLS.with(Cell::get), MATMUL_FLOPS.with(Cell::get))
}

/// Adds `flops` of matrix products done by a fused op (on this thread's counters).
pub(crate) fn count_flops(flops: u64) {
    MATMUL_CALLS.with(|c| c.set(c.get() + 1));
    MATMUL_FLOPS.with(|c| c.set(c.get() + flops));
}

fn count(batch: usize, m: usize, n: usize, k: usize) {
    MATMUL_CALLS.with(|c| c.set(c.get() + 1));
    MATMUL_FLOPS.with(|c| c.set(c.get() + 2 * (batch * m * n * k) as u64));
}

/// A row-major matrix operand: `rows × cols` as stored, used transposed when `trans`.
#[derive(Clone, Copy)]
pub struct Operand<'a, T> {
    /// Values, row-major.
    pub data: &'a [T],
    /// Stored rows.
    pub rows: usize,
    /// Stored columns.
    pub cols: usize,
    /// Use the transpose.
    pub trans: bool,
}

impl<'a, T: Float> Operand<'a, T> {
    /// Logical shape `(rows, cols)` after the optional transpose.
    pub fn logical(&self) -> (usize, usize) {
        if self.trans {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    fn view(&self) -> MatRef<'a, T> {
        let v = MatRef::from_row_major_slice(self.data, self.rows, self.cols);
        if self.trans {
            v.transpose()
        } else {
            v
        }
    }
}

/// `dst (+)= alpha · op(a) · op(b)` for one matrix: `dst` is row-major `m × n`.
pub fn gemm<T: Float>(dst: &mut [T], a: Operand<'_, T>, b: Operand<'_, T>, alpha: T, acc: bool) {
    let (m, k) = a.logical();
    let (k2, n) = b.logical();
    debug_assert_eq!(k, k2);
    count(1, m, n, k);
    gemm_raw(dst, a, b, alpha, acc, par_for(m * n * k));
}

/// Whether a product of this many multiply-adds is worth splitting across threads.
fn par_for(work: usize) -> Par {
    if work >= SPLIT_MIN && rayon::current_num_threads() > 1 {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

/// Below this many multiply-adds a block is computed on one thread.
const SPLIT_MIN: usize = 1 << 21;

fn gemm_raw<T: Float>(
    dst: &mut [T],
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    alpha: T,
    acc: bool,
    par: Par,
) {
    let (m, k) = a.logical();
    let (_, n) = b.logical();
    let mut out = MatMut::from_row_major_slice_mut(dst, m, n);
    if k == 0 {
        if !acc {
            out.fill(T::ZERO);
        }
        return;
    }
    let beta = if acc { Accum::Add } else { Accum::Replace };
    let depth = match par {
        Par::Seq => 0,
        _ => {
            rayon::current_num_threads()
                .next_power_of_two()
                .trailing_zeros()
                + 1
        }
    };
    split_gemm(out, beta, a.view(), b.view(), alpha, depth);
}

/// `dst (+)= alpha·a·b`, split recursively along the larger output dimension into blocks
/// computed by faer's sequential kernel on rayon's threads. (faer's own parallel mode keeps
/// its worker threads spinning after each product, which starves the rayon-parallel
/// element-wise ops that follow on a machine with few cores.)
fn split_gemm<T: Float>(
    dst: MatMut<'_, T>,
    beta: Accum,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    alpha: T,
    depth: u32,
) {
    let (m, n) = (dst.nrows(), dst.ncols());
    let k = a.ncols();
    if depth == 0 || m * n * k < SPLIT_MIN || (m < 16 && n < 16) {
        faer::linalg::matmul::matmul(dst, beta, a, b, alpha, Par::Seq);
        clear_upper_simd_state();
        return;
    }
    if m >= n {
        let mid = (m / 2).next_multiple_of(8).min(m);
        let (top, bottom) = dst.split_at_row_mut(mid);
        let (a_top, a_bottom) = a.split_at_row(mid);
        rayon::join(
            || split_gemm(top, beta, a_top, b, alpha, depth - 1),
            || split_gemm(bottom, beta, a_bottom, b, alpha, depth - 1),
        );
    } else {
        let mid = (n / 2).next_multiple_of(8).min(n);
        let (left, right) = dst.split_at_col_mut(mid);
        let (b_left, b_right) = b.split_at_col(mid);
        rayon::join(
            || split_gemm(left, beta, a, b_left, alpha, depth - 1),
            || split_gemm(right, beta, a, b_right, alpha, depth - 1),
        );
    }
}

/// Zeroes the upper halves of the vector registers after a faer kernel.
///
/// faer's x86 micro-kernels return with dirty upper YMM/ZMM state; every legacy-SSE
/// instruction that this crate's baseline-x86-64 code (and libm's `expf`) executes afterwards
/// on the same thread then pays a state-transition penalty. Measured here: a softmax over
/// 5·10⁶ values took 600 ms after a matrix product instead of 35 ms.
#[inline]
pub(crate) fn clear_upper_simd_state() {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX support was checked just above.
            unsafe { zero_upper() }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
}

/// Batched `dst[i] (+)= alpha · op(a[i]) · op(b[i])` over `batch` equally shaped matrices.
///
/// An operand whose `data` holds a single matrix is shared by every batch element. When
/// the matrices are small the batch is split across rayon's threads with sequential kernels;
/// large matrices use faer's own parallelism one after the other.
pub fn gemm_batched<T: Float>(
    dst: &mut [T],
    batch: usize,
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    alpha: T,
    acc: bool,
) {
    let (m, k) = a.logical();
    let (_, n) = b.logical();
    count(batch, m, n, k);
    let (a_stride, b_stride) = (stride(a, batch), stride(b, batch));
    let one = |i: usize, d: &mut [T], par: Par| {
        let ai = Operand {
            data: &a.data[i * a_stride..i * a_stride + a.rows * a.cols],
            ..a
        };
        let bi = Operand {
            data: &b.data[i * b_stride..i * b_stride + b.rows * b.cols],
            ..b
        };
        gemm_raw(d, ai, bi, alpha, acc, par);
    };
    let work = m * n * k;
    if m * n == 0 {
        return;
    }
    // Products too small to split well (the 32 attention heads of W2 are 2²⁰ multiply-adds
    // each) go one per task across the threads; a large product is split itself.
    let threads = rayon::current_num_threads();
    if batch > 1 && threads > 1 && (work < SPLIT_MIN * 4 || batch >= 4 * threads) {
        dst.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, d)| one(i, d, Par::Seq));
    } else {
        let par = par_for(work);
        for (i, d) in dst.chunks_mut(m * n).enumerate() {
            one(i, d, par);
        }
    }
}

fn stride<T>(op: Operand<'_, T>, batch: usize) -> usize {
    let size = op.rows * op.cols;
    if op.data.len() == size {
        0
    } else {
        debug_assert_eq!(op.data.len(), size * batch);
        size
    }
}
