//! The CUDA executor of planned matrix products ([`crate::ops::matmul`]): cuBLAS
//! strided-batched GEMMs (`deq_cuda::blas`), transposes read in place, a shared operand with
//! batch stride 0, gradients added with `beta = 1`; a sum over the batch is one batched product
//! into a temporary plus a deterministic sum over the batch.

use crate::device::buf;
use crate::float::Float;
use crate::ops::matmul::{Mat, Plan, Src};
use crate::tensor::Tensor;
use deq_cuda::blas::{gemm, Operand};
use deq_cuda::ops::linear::{beta, bias_grad};
use deq_cuda::GpuBuffer;

/// `[a, b, g]`: the product's operands and its cotangent (`None` in the forward pass, which
/// never reads it).
pub(crate) type Sources<'a, T> = [Option<&'a GpuBuffer<T>>; 3];

fn operand<'a, T: Float>(m: Mat, src: &Sources<'a, T>) -> Operand<'a, T> {
    let buf = match m.src {
        Src::A => src[0],
        Src::B => src[1],
        Src::G => src[2],
    };
    Operand {
        buf: buf.expect("matmul: every planned operand is given"),
        offset: 0,
        trans: m.trans,
        rows: m.rows,
        cols: m.cols,
        batch_stride: if m.shared { 0 } else { m.rows * m.cols },
    }
}

/// Runs `plan` into `dst` (written, or added to when `acc`).
pub(crate) fn run<T: Float>(plan: Plan, src: Sources<'_, T>, dst: &mut GpuBuffer<T>, acc: bool) {
    match plan {
        Plan::Each { batch, x, y } => {
            gemm(
                dst,
                operand(x, &src),
                operand(y, &src),
                batch,
                1.0,
                beta(acc),
            );
        }
        Plan::Sum { batch, x, y } => {
            let size = dst.len();
            let mut parts = dst.gpu().alloc::<T>(batch * size);
            gemm(
                &mut parts,
                operand(x, &src),
                operand(y, &src),
                batch,
                1.0,
                0.0,
            );
            bias_grad(&parts, batch, size, dst, acc);
        }
    }
}

/// The forward product of `a` and `b` into a new tensor of shape `out`.
pub(crate) fn forward<T: Float>(
    plan: Plan,
    a: &Tensor<T>,
    b: &Tensor<T>,
    out: &[usize],
) -> Tensor<T> {
    let (a, b) = (buf("matmul", a), buf("matmul", b));
    let mut y = a.gpu().alloc::<T>(out.iter().product());
    run(plan, [Some(a), Some(b), None], &mut y, false);
    Tensor::from_gpu(y, out)
}

/// The VJP of one operand, from the cotangent `g`.
pub(crate) fn backward<T: Float>(
    plan: Plan,
    a: &Tensor<T>,
    b: &Tensor<T>,
    g: &GpuBuffer<T>,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    let src = [Some(buf("matmul", a)), Some(buf("matmul", b)), Some(g)];
    run(plan, src, dst, acc);
}
