//! Matrix products through faer: plain, batched, with transposed operands read in place.
//!
//! `C = op(A)·op(B)` where `op` is the identity or the transpose. The VJPs are products too:
//! `∂A = G·op(B)ᵀ` (or its transpose) and `∂B = op(A)ᵀ·G`, each computed straight into the
//! gradient buffer with faer's accumulate mode, so nothing is copied or transposed in memory.

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
}

/// `op(a)·op(b)` on tensors, without recording.
pub fn matmul_tensor<T: Float>(a: &Tensor<T>, b: &Tensor<T>, ta: bool, tb: bool) -> Tensor<T> {
    let (d, out_shape) = dims(a.shape(), b.shape(), ta, tb);
    let mut out = vec![T::ZERO; d.batch * d.m * d.n];
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
