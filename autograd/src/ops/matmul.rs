//! Matrix products through faer: plain, batched, with transposed operands read in place.
//!
//! `C = op(A)·op(B)` where `op` is the identity or the transpose. The VJPs are products too:
//! `∂A = G·op(B)ᵀ` (or its transpose) and `∂B = op(A)ᵀ·G`, each computed straight into the
//! gradient buffer with faer's accumulate mode, so nothing is copied or transposed in memory.
//!
//! On CUDA tensors the same products run as cuBLAS strided-batched GEMMs (`deq_cuda::blas`):
//! transposes are read in place, a shared 2-D operand gets batch stride 0, and the VJPs add
//! into the gradient buffer with `beta = 1`. A gradient summed over the batch (of the shared
//! operand) is one batched product into a temporary plus a deterministic sum over the batch,
//! except where the CPU code flattens the batch into one product, which the GPU does as well.
//! `matmul_counters` count the CPU products only (GPU products are not
//! counted: the counters measure the work of the current host thread).

#[cfg(feature = "cuda")]
use crate::device::buf;
use crate::device::common_device;
use crate::float::Float;
use crate::kernels::{gemm, gemm_batched, Operand};
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

/// Shapes of one product after checking: batch count and `m × k · k × n`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    /// `a` is one matrix used by every batch element.
    a_shared: bool,
    /// `b` is one matrix used by every batch element.
    b_shared: bool,
}

fn dims(a: &[usize], b: &[usize], ta: bool, tb: bool) -> (Dims, Shape) {
    let fail = || -> ! {
        panic!(
            "matmul: shapes {a:?}{} and {b:?}{} are not compatible",
            if ta { "ᵀ" } else { "" },
            if tb { "ᵀ" } else { "" }
        )
    };
    if a.len() < 2 || b.len() < 2 {
        fail();
    }
    let (ra, ca) = (a[a.len() - 2], a[a.len() - 1]);
    let (rb, cb) = (b[b.len() - 2], b[b.len() - 1]);
    let (m, k) = if ta { (ca, ra) } else { (ra, ca) };
    let (k2, n) = if tb { (cb, rb) } else { (rb, cb) };
    if k != k2 {
        fail();
    }
    let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let (batch_dims, a_shared, b_shared) = if ba == bb {
        (ba, false, false)
    } else if bb.is_empty() {
        (ba, false, true)
    } else if ba.is_empty() {
        (bb, true, false)
    } else {
        fail()
    };
    let batch: usize = batch_dims.iter().product();
    let mut out = Shape::from_slice(batch_dims);
    out.push(m);
    out.push(n);
    let a_shared = a_shared || batch == 1;
    let b_shared = b_shared || batch == 1;
    (
        Dims {
            batch,
            m,
            k,
            n,
            a_shared,
            b_shared,
        },
        out,
    )
}

fn operand<T: Float>(t: &Tensor<T>, trans: bool) -> Operand<'_, T> {
    let s = t.shape();
    Operand {
        data: t.data(),
        rows: s[s.len() - 2],
        cols: s[s.len() - 1],
        trans,
    }
}

/// `op(a) · op(b)`, batched; a shared (2-D) operand is flattened into one large product when
/// its partner is not transposed.
fn product<T: Float>(dst: &mut [T], d: Dims, a: Operand<'_, T>, b: Operand<'_, T>, acc: bool) {
    if d.b_shared && !d.a_shared && !a.trans {
        let a_flat = Operand {
            rows: d.batch * a.rows,
            ..a
        };
        gemm(dst, a_flat, b, T::ONE, acc);
    } else if d.batch == 1 {
        gemm(dst, a, b, T::ONE, acc);
    } else {
        gemm_batched(dst, d.batch, a, b, T::ONE, acc);
    }
}

struct MatmulBackward<T: Float> {
    a: Tensor<T>,
    b: Tensor<T>,
    ta: bool,
    tb: bool,
    d: Dims,
}

impl<T: Float> MatmulBackward<T> {
    /// `∂A`: stored `[m, k]` when not transposed (`G·op(B)ᵀ`), `[k, m]` otherwise (`op(B)·Gᵀ`).
    fn grad_a(&self, g: &[T], dst: &mut [T], acc: bool) {
        let d = self.d;
        let gm = Operand {
            data: g,
            rows: d.m,
            cols: d.n,
            trans: false,
        };
        let bm = operand(&self.b, self.tb);
        let (x, y) = if self.ta {
            (bm, Operand { trans: true, ..gm })
        } else {
            (
                gm,
                Operand {
                    trans: !self.tb,
                    ..bm
                },
            )
        };
        self.reduce_into(dst, self.d.a_shared, x, y, acc);
    }

    /// `∂B`: stored `[k, n]` when not transposed (`op(A)ᵀ·G`), `[n, k]` otherwise (`Gᵀ·op(A)`).
    fn grad_b(&self, g: &[T], dst: &mut [T], acc: bool) {
        let d = self.d;
        let gm = Operand {
            data: g,
            rows: d.m,
            cols: d.n,
            trans: false,
        };
        let am = operand(&self.a, self.ta);
        let (x, y) = if self.tb {
            (Operand { trans: true, ..gm }, am)
        } else {
            (
                Operand {
                    trans: !self.ta,
                    ..am
                },
                gm,
            )
        };
        // Fast path: a shared B with a batched, untransposed A is one product over all rows.
        if d.b_shared && !d.a_shared && !self.ta && d.batch > 1 {
            let rows = d.batch * d.m;
            let (x, y) = if self.tb {
                (
                    Operand {
                        data: g,
                        rows,
                        cols: d.n,
                        trans: true,
                    },
                    Operand {
                        data: self.a.data(),
                        rows,
                        cols: d.k,
                        trans: false,
                    },
                )
            } else {
                (
                    Operand {
                        data: self.a.data(),
                        rows,
                        cols: d.k,
                        trans: true,
                    },
                    Operand {
                        data: g,
                        rows,
                        cols: d.n,
                        trans: false,
                    },
                )
            };
            gemm(dst, x, y, T::ONE, acc);
            return;
        }
        self.reduce_into(dst, d.b_shared, x, y, acc);
    }

    /// Writes `x_i · y_i` for each batch element, summing over the batch when the target is
    /// shared by every element.
    fn reduce_into(
        &self,
        dst: &mut [T],
        shared: bool,
        x: Operand<'_, T>,
        y: Operand<'_, T>,
        acc: bool,
    ) {
        let d = self.d;
        if d.batch == 1 {
            gemm(dst, x, y, T::ONE, acc);
        } else if !shared {
            gemm_batched(dst, d.batch, x, y, T::ONE, acc);
        } else {
            for i in 0..d.batch {
                gemm(
                    dst,
                    batch_item(x, i),
                    batch_item(y, i),
                    T::ONE,
                    acc || i > 0,
                );
            }
        }
    }
}

impl<T: Float> Backward<T> for MatmulBackward<T> {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        if k == 0 {
            self.grad_a(g, dst, acc);
        } else {
            self.grad_b(g, dst, acc);
        }
    }

    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        if k == 0 {
            self.grad_a_gpu(g, dst, acc);
        } else {
            self.grad_b_gpu(g, dst, acc);
        }
    }
}

#[cfg(feature = "cuda")]
impl<T: Float> MatmulBackward<T> {
    /// `G` as batched `m×n` matrices.
    fn g_operand<'a>(&self, g: &'a deq_cuda::GpuBuffer<T>, trans: bool) -> GpuOperand<'a, T> {
        let d = self.d;
        GpuOperand {
            buf: g,
            offset: 0,
            trans,
            rows: d.m,
            cols: d.n,
            batch_stride: d.m * d.n,
        }
    }

    /// [`MatmulBackward::grad_a`] on the device.
    fn grad_a_gpu(&self, g: &deq_cuda::GpuBuffer<T>, dst: &mut deq_cuda::GpuBuffer<T>, acc: bool) {
        let d = self.d;
        let bm = gpu_operand(&self.b, self.tb, d.b_shared);
        let (x, y) = if self.ta {
            (bm, self.g_operand(g, true))
        } else {
            (
                self.g_operand(g, false),
                GpuOperand {
                    trans: !self.tb,
                    ..bm
                },
            )
        };
        gpu_reduce_into(dst, d, d.a_shared, x, y, acc);
    }

    /// [`MatmulBackward::grad_b`] on the device, with the same flattened fast path.
    fn grad_b_gpu(&self, g: &deq_cuda::GpuBuffer<T>, dst: &mut deq_cuda::GpuBuffer<T>, acc: bool) {
        let d = self.d;
        if d.b_shared && !d.a_shared && !self.ta && d.batch > 1 {
            let rows = d.batch * d.m;
            let flat = |buf, cols, trans| GpuOperand {
                buf,
                offset: 0,
                trans,
                rows,
                cols,
                batch_stride: rows * cols,
            };
            let a = buf("matmul", &self.a);
            let (x, y) = if self.tb {
                (flat(g, d.n, true), flat(a, d.k, false))
            } else {
                (flat(a, d.k, true), flat(g, d.n, false))
            };
            deq_cuda::blas::gemm(dst, x, y, 1, 1.0, deq_cuda::ops::linear::beta(acc));
            return;
        }
        let am = gpu_operand(&self.a, self.ta, d.a_shared);
        let (x, y) = if self.tb {
            (self.g_operand(g, true), am)
        } else {
            (
                GpuOperand {
                    trans: !self.ta,
                    ..am
                },
                self.g_operand(g, false),
            )
        };
        gpu_reduce_into(dst, d, d.b_shared, x, y, acc);
    }
}

#[cfg(feature = "cuda")]
type GpuOperand<'a, T> = deq_cuda::blas::Operand<'a, T>;

/// The stored matrices of a CUDA tensor (its last two dimensions), with batch stride 0 when
/// it is one matrix shared by the whole batch.
#[cfg(feature = "cuda")]
fn gpu_operand<T: Float>(t: &Tensor<T>, trans: bool, shared: bool) -> GpuOperand<'_, T> {
    let s = t.shape();
    let (rows, cols) = (s[s.len() - 2], s[s.len() - 1]);
    GpuOperand {
        buf: buf("matmul", t),
        offset: 0,
        trans,
        rows,
        cols,
        batch_stride: if shared { 0 } else { rows * cols },
    }
}

/// The forward product on the device into a new buffer, flattening a batched `a` against a
/// shared `b` into one product as [`product`] does.
#[cfg(feature = "cuda")]
fn gpu_product<T: Float>(
    d: Dims,
    a: GpuOperand<'_, T>,
    b: GpuOperand<'_, T>,
) -> deq_cuda::GpuBuffer<T> {
    let mut out = a.buf.gpu().alloc::<T>(d.batch * d.m * d.n);
    if d.b_shared && !d.a_shared && !a.trans {
        let rows = d.batch * a.rows;
        let a_flat = GpuOperand {
            rows,
            batch_stride: rows * a.cols,
            ..a
        };
        deq_cuda::blas::gemm(&mut out, a_flat, b, 1, 1.0, 0.0);
    } else {
        deq_cuda::blas::gemm(&mut out, a, b, d.batch, 1.0, 0.0);
    }
    out
}

/// `dst (+)= x_i·y_i` per batch element, or `Σ_i x_i·y_i` when the target is `shared` by the
/// batch: one batched product into a temporary, then a deterministic sum over the batch.
#[cfg(feature = "cuda")]
fn gpu_reduce_into<T: Float>(
    dst: &mut deq_cuda::GpuBuffer<T>,
    d: Dims,
    shared: bool,
    x: GpuOperand<'_, T>,
    y: GpuOperand<'_, T>,
    acc: bool,
) {
    use deq_cuda::blas::gemm;
    use deq_cuda::ops::linear::{beta, bias_grad};
    if d.batch == 1 {
        gemm(dst, x, y, 1, 1.0, beta(acc));
    } else if !shared {
        gemm(dst, x, y, d.batch, 1.0, beta(acc));
    } else {
        let size = dst.len();
        let mut parts = dst.gpu().alloc::<T>(d.batch * size);
        gemm(&mut parts, x, y, d.batch, 1.0, 0.0);
        bias_grad(&parts, d.batch, size, dst, acc);
    }
}

/// `op(a)·op(b)` on tensors, without recording.
pub fn matmul_tensor<T: Float>(a: &Tensor<T>, b: &Tensor<T>, ta: bool, tb: bool) -> Tensor<T> {
    let (d, out_shape) = dims(a.shape(), b.shape(), ta, tb);
    common_device("matmul", &[a, b]);
    #[cfg(feature = "cuda")]
    if a.gpu().is_some() {
        let out = gpu_product(
            d,
            gpu_operand(a, ta, d.a_shared),
            gpu_operand(b, tb, d.b_shared),
        );
        return Tensor::from_gpu(out, &out_shape);
    }
    let mut out = crate::pool::take(d.batch * d.m * d.n);
    product(&mut out, d, operand(a, ta), operand(b, tb), false);
    Tensor::from_vec(out, &out_shape)
}

impl<T: Float> Var<T> {
    /// Matrix product over the last two dimensions: `[..., m, k] · [..., k, n] -> [..., m, n]`.
    /// Leading (batch) dimensions must be equal, or one operand must be a single 2-D matrix
    /// shared by the whole batch (as the weight of a linear layer).
    pub fn matmul(&self, other: &Var<T>) -> Var<T> {
        self.matmul_t(other, false, false)
    }

    /// `op(self) · op(other)` where `op` transposes the last two dimensions when its flag is
    /// set. Transposed operands are read in place (no copy).
    pub fn matmul_t(&self, other: &Var<T>, ta: bool, tb: bool) -> Var<T> {
        let (a, b) = (self.value(), other.value());
        let (d, _) = dims(a.shape(), b.shape(), ta, tb);
        let value = matmul_tensor(a, b, ta, tb);
        record(value, &[self, other], || MatmulBackward {
            a: a.clone(),
            b: b.clone(),
            ta,
            tb,
            d,
        })
    }
}

/// Matrix `i` of a batched operand, or the operand itself when it is shared.
fn batch_item<T: Float>(op: Operand<'_, T>, i: usize) -> Operand<'_, T> {
    let size = op.rows * op.cols;
    if op.data.len() == size {
        op
    } else {
        Operand {
            data: &op.data[i * size..(i + 1) * size],
            ..op
        }
    }
}
