//! Matrix products through faer: plain, batched, with transposed operands read in place.
//!
//! `C = op(A)·op(B)` where `op` is the identity or the transpose. The VJPs are products too:
//! `∂A = G·op(B)ᵀ` (or its transpose) and `∂B = op(A)ᵀ·G`, each computed straight into the
//! gradient buffer with faer's accumulate mode, so nothing is copied or transposed in memory.
//!
//! Every product, forward or VJP, is planned once here (`Plan`) and run by each device's
//! executor: `crate::cpu::matmul` (faer) and `crate::cuda::matmul` (cuBLAS strided-batched
//! GEMMs: transposes read in place, a shared 2-D operand with batch stride 0, the VJPs added
//! into the gradient buffer with `beta = 1`, a gradient summed over the batch as one batched
//! product into a temporary plus a deterministic sum). The plan is where the shared-operand
//! fast path lives: a batched operand against a shared 2-D one folds the batch into one
//! larger product. `matmul_counters` count the CPU products only (GPU products are not
//! counted: the counters measure the work of the current host thread).

use crate::cpu::matmul as cpu;
use crate::device::{common_device, cuda_vjp, on_cuda, Device};
use crate::float::Float;
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

/// Which tensor an operand of a planned product reads: `A`, `B`, or the cotangent `G`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
    A,
    B,
    G,
}

/// One operand of a planned product: the stored `rows × cols` matrices of `src` (one per
/// batch element, or a single one when `shared`), read transposed when `trans`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mat {
    pub(crate) src: Src,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) trans: bool,
    pub(crate) shared: bool,
}

impl Mat {
    /// The batch's matrices as the consecutive row blocks of one `[batch·rows, cols]` matrix
    /// (a shared operand stays the single matrix it is).
    fn folded(self, batch: usize) -> Mat {
        if self.shared {
            self
        } else {
            Mat {
                rows: batch * self.rows,
                ..self
            }
        }
    }
}

/// A product as the devices run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `dst_i (+)= op(x_i)·op(y_i)` for each of `batch` elements (one product when `batch` is
    /// 1), the outputs stacked.
    Each { batch: usize, x: Mat, y: Mat },
    /// `dst (+)= Σ_i op(x_i)·op(y_i)`: the gradient of an operand shared by the batch.
    Sum { batch: usize, x: Mat, y: Mat },
}

impl Plan {
    /// `op(x_i)·op(y_i)` for every batch element, the outputs stacked.
    fn each(batch: usize, x: Mat, y: Mat) -> Plan {
        Plan::Each { batch, x, y }
    }

    /// The gradient of an operand: one output per batch element, or summed over the batch
    /// when the operand is `shared` by it.
    fn grad(batch: usize, x: Mat, y: Mat, shared: bool) -> Plan {
        if batch == 1 || !shared {
            Plan::Each { batch, x, y }
        } else {
            Plan::Sum { batch, x, y }
        }
    }

    /// The shared-operand fast path: the batch folded into one product over stacked row blocks.
    /// For a batched, untransposed `x` against a shared `y` the stacked `x_i` are the rows of
    /// one `[batch·m, k]` matrix and the stacked outputs those of `[batch·m, n]`, so the batch
    /// is the single product `[x_0; x_1; …]·op(y)`; for a sum over the batch of `x_iᵀ·y_i`
    /// with both stored in row blocks, `Σ_i x_iᵀ·y_i = [x_0; x_1; …]ᵀ·[y_0; y_1; …]`.
    fn folded(batch: usize, x: Mat, y: Mat) -> Plan {
        Plan::Each {
            batch: 1,
            x: x.folded(batch),
            y: y.folded(batch),
        }
    }
}

impl Dims {
    /// `A` as stored (`[m, k]`, or `[k, m]` when `ta`), read transposed when `trans`.
    fn a(&self, ta: bool, trans: bool) -> Mat {
        let (rows, cols) = if ta {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        Mat {
            src: Src::A,
            rows,
            cols,
            trans,
            shared: self.a_shared,
        }
    }

    /// `B` as stored (`[k, n]`, or `[n, k]` when `tb`), read transposed when `trans`.
    fn b(&self, tb: bool, trans: bool) -> Mat {
        let (rows, cols) = if tb {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        Mat {
            src: Src::B,
            rows,
            cols,
            trans,
            shared: self.b_shared,
        }
    }

    /// The cotangent `G` (`[m, n]` per batch element), read transposed when `trans`.
    fn g(&self, trans: bool) -> Mat {
        Mat {
            src: Src::G,
            rows: self.m,
            cols: self.n,
            trans,
            shared: false,
        }
    }

    /// A batched `A`, read untransposed, against a shared `B`: the case where the forward
    /// product and `∂B` fold the batch into one product ([`Plan::folded`]).
    fn folds(&self, ta: bool) -> bool {
        self.b_shared && !self.a_shared && !ta
    }

    /// `op(A)·op(B)`.
    fn forward(&self, ta: bool, tb: bool) -> Plan {
        let (x, y) = (self.a(ta, ta), self.b(tb, tb));
        if self.folds(ta) {
            Plan::folded(self.batch, x, y)
        } else {
            Plan::each(self.batch, x, y)
        }
    }

    /// `∂A`: stored `[m, k]` when not transposed (`G·op(B)ᵀ`), `[k, m]` otherwise (`op(B)·Gᵀ`),
    /// summed over the batch when `A` is shared.
    fn grad_a(&self, ta: bool, tb: bool) -> Plan {
        let (x, y) = if ta {
            (self.b(tb, tb), self.g(true))
        } else {
            (self.g(false), self.b(tb, !tb))
        };
        Plan::grad(self.batch, x, y, self.a_shared)
    }

    /// `∂B`: stored `[k, n]` when not transposed (`op(A)ᵀ·G`), `[n, k]` otherwise (`Gᵀ·op(A)`),
    /// summed over the batch when `B` is shared; one product over all rows when the forward
    /// pass folded the batch (`Σ_i A_iᵀ·G_i` over stacked row blocks).
    fn grad_b(&self, ta: bool, tb: bool) -> Plan {
        let (x, y) = if tb {
            (self.g(true), self.a(ta, ta))
        } else {
            (self.a(ta, !ta), self.g(false))
        };
        if self.folds(ta) && self.batch > 1 {
            Plan::folded(self.batch, x, y)
        } else {
            Plan::grad(self.batch, x, y, self.b_shared)
        }
    }
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

struct MatmulBackward<T: Float> {
    a: Tensor<T>,
    b: Tensor<T>,
    ta: bool,
    tb: bool,
    d: Dims,
}

impl<T: Float> MatmulBackward<T> {
    fn plan(&self, k: usize) -> Plan {
        if k == 0 {
            self.d.grad_a(self.ta, self.tb)
        } else {
            self.d.grad_b(self.ta, self.tb)
        }
    }
}

impl<T: Float> Backward<T> for MatmulBackward<T> {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        cpu::run(self.plan(k), [self.a.data(), self.b.data(), g], dst, acc);
    }

    cuda_vjp!(|op, k, g, dst, acc| {
        crate::cuda::matmul::backward(op.plan(k), &op.a, &op.b, g, dst, acc)
    });
}

/// `op(a)·op(b)` on tensors, without recording.
pub fn matmul_tensor<T: Float>(a: &Tensor<T>, b: &Tensor<T>, ta: bool, tb: bool) -> Tensor<T> {
    let (d, out_shape) = dims(a.shape(), b.shape(), ta, tb);
    let plan = d.forward(ta, tb);
    match common_device("matmul", &[a, b]) {
        Device::Cpu => {
            let mut out = crate::pool::take(d.batch * d.m * d.n);
            cpu::run(plan, [a.data(), b.data(), &[]], &mut out, false);
            Tensor::from_vec(out, &out_shape)
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::matmul::forward(plan, a, b, &out_shape)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mat(src: Src, rows: usize, cols: usize, trans: bool, shared: bool) -> Mat {
        Mat {
            src,
            rows,
            cols,
            trans,
            shared,
        }
    }

    /// The plans of `[3, 2, 4]·[4, 5]` (a batched input against a shared weight) and its VJPs:
    /// the forward product and `∂B` fold the batch into one product over 6 rows, `∂A` stays a
    /// batch of 3 products reading the shared `B` (no fold: the products and their thread
    /// split are those of the batched kernel).
    #[test]
    fn shared_b_folds_the_forward_product_and_its_gradient_only() {
        let (d, out) = dims(&[3, 2, 4], &[4, 5], false, false);
        assert_eq!(&out[..], &[3, 2, 5]);
        let (a, b, g) = (Src::A, Src::B, Src::G);
        assert_eq!(
            d.forward(false, false),
            Plan::Each {
                batch: 1,
                x: mat(a, 6, 4, false, false),
                y: mat(b, 4, 5, false, true)
            }
        );
        assert_eq!(
            d.grad_a(false, false),
            Plan::Each {
                batch: 3,
                x: mat(g, 2, 5, false, false),
                y: mat(b, 4, 5, true, true)
            }
        );
        assert_eq!(
            d.grad_b(false, false),
            Plan::Each {
                batch: 1,
                x: mat(a, 6, 4, true, false),
                y: mat(g, 6, 5, false, false)
            }
        );
        // With B stored transposed ([5, 4]) the gradient is Gᵀ·A over the stacked rows.
        let (d, _) = dims(&[3, 2, 4], &[5, 4], false, true);
        assert_eq!(
            d.grad_b(false, true),
            Plan::Each {
                batch: 1,
                x: mat(g, 6, 5, true, false),
                y: mat(a, 6, 4, false, false)
            }
        );
    }

    /// A transposed batched `A` cannot be stacked by rows: every product stays batched and the
    /// shared `B`'s gradient is a sum over the batch. A shared `A` sums its own gradient.
    #[test]
    fn no_fold_for_a_transposed_input_and_a_sum_for_a_shared_a() {
        let (d, _) = dims(&[3, 4, 2], &[4, 5], true, false);
        let (a, b, g) = (Src::A, Src::B, Src::G);
        assert_eq!(
            d.forward(true, false),
            Plan::Each {
                batch: 3,
                x: mat(a, 4, 2, true, false),
                y: mat(b, 4, 5, false, true)
            }
        );
        assert_eq!(
            d.grad_b(true, false),
            Plan::Sum {
                batch: 3,
                x: mat(a, 4, 2, false, false),
                y: mat(g, 2, 5, false, false)
            }
        );
        let (d, _) = dims(&[2, 4], &[3, 4, 5], false, false);
        assert_eq!(
            d.grad_a(false, false),
            Plan::Sum {
                batch: 3,
                x: mat(g, 2, 5, false, false),
                y: mat(b, 4, 5, true, false)
            }
        );
        assert_eq!(
            d.grad_b(false, false),
            Plan::Each {
                batch: 3,
                x: mat(a, 2, 4, true, true),
                y: mat(g, 2, 5, false, false)
            }
        );
    }
}
