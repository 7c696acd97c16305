//! Row-major GEMM through cuBLAS (column-major), with transposed operands read in place.
//!
//! A row-major `m×n` matrix occupies the same memory as its column-major transpose, so
//! `C = op(A)·op(B)` (row-major) is computed as the column-major product `Cᵀ = op(B)ᵀ·op(A)ᵀ`:
//! cuBLAS gets B first, then A, with dimensions `(n, m, k)`, and the transpose flags pass through
//! unchanged.

use crate::float::{Dtype, GpuFloat};
use crate::GpuBuffer;
use cudarc::cublas::{result, sys};
use std::os::raw::c_int;

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
    /// Stored columns.
    pub cols: usize,
    /// Elements between consecutive matrices of a batch; 0 broadcasts one matrix.
    pub batch_stride: usize,
}

impl<'a, T: GpuFloat> Operand<'a, T> {
    /// One stored `rows×cols` matrix at the start of `buf`.
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
}

fn op(trans: bool) -> sys::cublasOperation_t {
    if trans {
        sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        sys::cublasOperation_t::CUBLAS_OP_N
    }
}

/// `dst = alpha·op(A)·op(B) + beta·dst` for `batch` matrix pairs (row-major `dst`, batch
/// stride `m·n`). Panics on inconsistent shapes (a programmer error).
pub fn gemm<T: GpuFloat>(
    dst: &mut GpuBuffer<T>,
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
    assert!(
        dst.len() >= batch * m * n,
        "gemm: destination has {} values, needs {batch}x{m}x{n}",
        dst.len()
    );
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    let gpu = dst.gpu().clone();
    gpu.bind();
    let handle = gpu.inner.blas.lock().expect("cublas lock");
    let (lda, ldb) = (a.cols.max(1) as c_int, b.cols.max(1) as c_int);
    let (m_, n_, k_) = (m as c_int, n as c_int, k as c_int);
    let ldc = n as c_int;
    let stride_c = (m * n) as i64;
    // SAFETY: the asserts above bound every access: op(A) is m×k with leading dimension
    // `a.cols` (stored row length), op(B) k×n with `b.cols`, C m×n with n; batch strides are
    // the caller's and lie inside the buffers (checked below for A and B).
    let (a_end, b_end) = (
        a.offset + (batch - 1) * a.batch_stride + a.rows * a.cols,
        b.offset + (batch - 1) * b.batch_stride + b.rows * b.cols,
    );
    assert!(
        a_end <= a.buf.len() && b_end <= b.buf.len(),
        "gemm: operands too short"
    );
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
                    b.batch_stride as i64,
                    a.ptr() as *const f32,
                    lda,
                    a.batch_stride as i64,
                    &be,
                    dst.ptr() as *mut f32,
                    ldc,
                    stride_c,
                    batch as c_int,
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
                b.batch_stride as i64,
                a.ptr() as *const f64,
                lda,
                a.batch_stride as i64,
                &beta,
                dst.ptr() as *mut f64,
                ldc,
                stride_c,
                batch as c_int,
            ),
        }
    };
    status.unwrap_or_else(|e| panic!("cuBLAS gemm ({m}x{k} · {k}x{n}, batch {batch}): {e:?}"));
}
