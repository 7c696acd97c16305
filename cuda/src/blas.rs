//! Row-major GEMM through cuBLAS (column-major), with transposed operands read in place.
//!
//! # Mapping row-major products onto column-major cuBLAS
//!
//! A row-major `r×c` matrix with rows `ld` values apart occupies the same memory as the
//! column-major `c×r` matrix (its transpose) with leading dimension `ld`. Every operand and
//! destination here is a contiguous row-major block, so `ld` is its stored column count.
//!
//! We want the row-major `C (m×n) = op(A) (m×k) · op(B) (k×n)`. cuBLAS sees the buffer of `C`
//! as the column-major `Cᵀ (n×m)` with `ldc = n`, and `Cᵀ = op(B)ᵀ · op(A)ᵀ`. So cuBLAS gets
//! `B` first and `A` second, with its dimensions `(M, N, K) = (n, m, k)`:
//!
//! - First cuBLAS operand (must be `op'(B') = op(B)ᵀ`, `n×k` column-major). The buffer of `B`
//!   (stored `rb×cb` row-major) is the column-major `Bᵀ` (`cb×rb`, ld `cb`). If `B` is not
//!   transposed, `op(B)ᵀ = Bᵀ` is that matrix as it is: `OP_N`, `lda = cb` (≥ M = n = cb). If
//!   it is transposed, `op(B)ᵀ = B`, the transpose of the column-major view: `OP_T`, again
//!   `lda = cb` (≥ its stored rows cb = k). So the transpose flag passes through unchanged
//!   and the leading dimension is always the stored column count.
//! - Second cuBLAS operand (`op(A)ᵀ`, `k×m`): the same reasoning with `A` (stored `ra×ca`):
//!   flag unchanged, `ldb = ca`.
//! - Destination: `Cᵀ`, `n×m` column-major, `ldc = n`.
//!
//! Batches use cuBLAS strided batched GEMM: matrix `i` of an operand starts at
//! `offset + i·batch_stride` (a stride of 0 reuses one matrix for the whole batch), matrix
//! `i` of the destination at `offset + i·batch_stride` of the [`Target`]. `beta = 1`
//! accumulates into the destination (how the VJPs add into gradient buffers without
//! temporaries); `beta = 0` overwrites it without reading it (cuBLAS does not read `C` when
//! `beta` is zero, so uninitialised buffers are fine).
//!
//! An inner dimension `k = 0` is handled here (the product is zero: the destination is
//! scaled by `beta`, i.e. zeroed or left as it is) instead of relying on cuBLAS' handling of
//! empty products.

use crate::float::{Dtype, GpuFloat};
use crate::launch::{launch, linear, Arg};
use crate::GpuBuffer;
use cudarc::cublas::{result, sys};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};

/// One GEMM operand: a buffer holding `batch` row-major matrices, read transposed or not.
#[derive(Clone, Copy)]
pub struct Operand<'a, T: GpuFloat> {
    /// The values.
    pub buf: &'a GpuBuffer<T>,
    /// Element offset of the first matrix.
    pub offset: usize,
    /// Read the stored matrix transposed.
    pub trans: bool,
    /// Stored rows (before any transpose).
    pub rows: usize,
    /// Stored columns (the row length in memory).
    pub cols: usize,
    /// Elements between consecutive matrices of a batch; 0 broadcasts one matrix.
    pub batch_stride: usize,
}

impl<'a, T: GpuFloat> Operand<'a, T> {
    /// One stored `rows×cols` matrix at the start of `buf` (batch stride `rows·cols`).
    pub fn matrix(buf: &'a GpuBuffer<T>, rows: usize, cols: usize, trans: bool) -> Self {
        Operand {
            buf,
            offset: 0,
            trans,
            rows,
            cols,
            batch_stride: rows * cols,
        }
    }

    /// (rows, cols) after the transpose.
    pub fn logical(&self) -> (usize, usize) {
        if self.trans {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    fn ptr(&self) -> u64 {
        self.buf.ptr() + (self.offset * std::mem::size_of::<T>()) as u64
    }

    /// Panics unless all `batch` matrices lie inside the buffer.
    fn check_bounds(&self, name: &str, batch: usize) {
        let end = self.offset + (batch - 1) * self.batch_stride + self.rows * self.cols;
        assert!(
            end <= self.buf.len(),
            "gemm: operand {name} ({batch} of {}x{} at offset {}, stride {}) needs {end} values, \
             its buffer has {}",
            self.rows,
            self.cols,
            self.offset,
            self.batch_stride,
            self.buf.len()
        );
    }
}

/// Where a product goes: `batch` contiguous row-major `m×n` matrices in `buf`, the first at
/// `offset`, consecutive ones `batch_stride` values apart (at least `m·n` when `batch > 1`).
pub struct Target<'a, T: GpuFloat> {
    /// The destination buffer.
    pub buf: &'a mut GpuBuffer<T>,
    /// Element offset of the first matrix.
    pub offset: usize,
    /// Elements between consecutive output matrices.
    pub batch_stride: usize,
}

impl<T: GpuFloat> Target<'_, T> {
    fn ptr(&self) -> u64 {
        self.buf.ptr() + (self.offset * std::mem::size_of::<T>()) as u64
    }
}

fn op(trans: bool) -> sys::cublasOperation_t {
    if trans {
        sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        sys::cublasOperation_t::CUBLAS_OP_N
    }
}

/// A dimension as cuBLAS' `int`; panics beyond its range.
fn int(what: &str, v: usize) -> c_int {
    c_int::try_from(v).unwrap_or_else(|_| panic!("gemm: {what} = {v} exceeds cuBLAS' int range"))
}

/// `dst = alpha·op(A)·op(B) + beta·dst` for `batch` matrix pairs, into a packed row-major
/// `dst` (matrix `i` at `i·m·n`). Panics on inconsistent shapes (a programmer error).
pub fn gemm<T: GpuFloat>(
    dst: &mut GpuBuffer<T>,
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    batch: usize,
    alpha: f64,
    beta: f64,
) {
    let (m, n) = (a.logical().0, b.logical().1);
    let target = Target {
        buf: dst,
        offset: 0,
        batch_stride: m * n,
    };
    gemm_to(target, a, b, batch, alpha, beta);
}

/// Floating-point operations of every GEMM queued so far, all devices (`2·batch·m·n·k` each),
/// for benchmarks' achieved GFLOP/s.
pub fn flop_count() -> u64 {
    GEMM_FLOPS.load(Ordering::Relaxed)
}

static GEMM_FLOPS: AtomicU64 = AtomicU64::new(0);

/// `dst_i = alpha·op(A_i)·op(B_i) + beta·dst_i` for `i < batch`, where the destination
/// matrices are placed by `dst` (offset and batch stride; see the module docs for how this
/// maps onto cuBLAS). Panics on inconsistent shapes or out-of-bounds matrices.
pub fn gemm_to<T: GpuFloat>(
    dst: Target<'_, T>,
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    batch: usize,
    alpha: f64,
    beta: f64,
) {
    let (m, k) = a.logical();
    let (kb, n) = b.logical();
    assert_eq!(
        k, kb,
        "gemm: inner dimensions differ: op(A) is {m}x{k}, op(B) is {kb}x{n}"
    );
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    assert!(
        batch == 1 || dst.batch_stride >= m * n,
        "gemm: output matrices of {m}x{n} overlap (batch stride {})",
        dst.batch_stride
    );
    let dst_end = dst.offset + (batch - 1) * dst.batch_stride + m * n;
    assert!(
        dst_end <= dst.buf.len(),
        "gemm: destination has {} values, {batch} matrices of {m}x{n} at offset {} with stride \
         {} need {dst_end}",
        dst.buf.len(),
        dst.offset,
        dst.batch_stride
    );
    let gpu = dst.buf.gpu().clone();
    assert!(
        *a.buf.gpu() == gpu && *b.buf.gpu() == gpu,
        "gemm: operands on different devices"
    );
    if k == 0 {
        scale_blocks(dst, batch, m * n, beta);
        return;
    }
    a.check_bounds("A", batch);
    b.check_bounds("B", batch);
    GEMM_FLOPS.fetch_add(2 * (batch * m * n * k) as u64, Ordering::Relaxed);
    let (m_, n_, k_) = (int("m", m), int("n", n), int("k", k));
    let (lda, ldb, ldc) = (int("lda", a.cols), int("ldb", b.cols), n_);
    let count = int("batch", batch);
    let (stride_a, stride_b) = (a.batch_stride as i64, b.batch_stride as i64);
    let stride_c = dst.batch_stride as i64;
    gpu.bind();
    let handle = gpu.inner.blas.lock().expect("cublas lock");
    // SAFETY: every matrix read or written lies inside its buffer (checked above and in
    // `check_bounds`); `k > 0`, so the stored column counts `a.cols` and `b.cols` are ≥ 1 and
    // satisfy cuBLAS' leading-dimension rules (module docs); cuBLAS runs on the device's
    // stream, after the work that produced the operands.
    let status = unsafe {
        match T::GPU_DTYPE {
            Dtype::F32 => {
                let (al, be) = (alpha as f32, beta as f32);
                result::sgemm_strided_batched(
                    handle.0,
                    op(b.trans),
                    op(a.trans),
                    n_,
                    m_,
                    k_,
                    &al,
                    b.ptr() as *const f32,
                    ldb,
                    stride_b,
                    a.ptr() as *const f32,
                    lda,
                    stride_a,
                    &be,
                    dst.ptr() as *mut f32,
                    ldc,
                    stride_c,
                    count,
                )
            }
            Dtype::F64 => result::dgemm_strided_batched(
                handle.0,
                op(b.trans),
                op(a.trans),
                n_,
                m_,
                k_,
                &alpha,
                b.ptr() as *const f64,
                ldb,
                stride_b,
                a.ptr() as *const f64,
                lda,
                stride_a,
                &beta,
                dst.ptr() as *mut f64,
                ldc,
                stride_c,
                count,
            ),
        }
    };
    status.unwrap_or_else(|e| panic!("cuBLAS gemm ({m}x{k} · {k}x{n}, batch {batch}): {e:?}"));
}

/// The product of an empty inner dimension: `dst_i = beta·dst_i` (zero when `beta` is 0,
/// whatever `dst` held; nothing to do when `beta` is 1).
fn scale_blocks<T: GpuFloat>(dst: Target<'_, T>, batch: usize, size: usize, beta: f64) {
    if beta == 1.0 {
        return;
    }
    launch::<T>(
        dst.buf.gpu(),
        "linear_scale_blocks",
        linear(batch * size),
        &[
            Arg::Ptr(dst.ptr()),
            Arg::len(batch),
            Arg::len(dst.batch_stride),
            Arg::len(size),
            Arg::real::<T>(beta),
        ],
    );
}
