//! The CPU executor of planned matrix products ([`crate::ops::matmul`]): each [`Plan`] is
//! one faer product ([`gemm`]), a batch of them ([`gemm_batched`], a shared operand read by
//! every element), or a sum over the batch accumulated into one destination.

use crate::float::Float;
use crate::kernels::{gemm, gemm_batched, Operand};
use crate::ops::matmul::{Mat, Plan, Src};

/// `[a, b, g]`: the values of the product's operands and of its cotangent (empty in the
/// forward pass, which never reads it).
pub(crate) type Sources<'a, T> = [&'a [T]; 3];

fn operand<'a, T: Float>(m: Mat, src: &Sources<'a, T>) -> Operand<'a, T> {
    let data = match m.src {
        Src::A => src[0],
        Src::B => src[1],
        Src::G => src[2],
    };
    Operand {
        data,
        rows: m.rows,
        cols: m.cols,
        trans: m.trans,
    }
}

/// Runs `plan` into `dst` (written, or added to when `acc`).
pub(crate) fn run<T: Float>(plan: Plan, src: Sources<'_, T>, dst: &mut [T], acc: bool) {
    match plan {
        Plan::Each { batch, x, y } => {
            let (x, y) = (operand(x, &src), operand(y, &src));
            if batch == 1 {
                gemm(dst, x, y, T::ONE, acc);
            } else {
                gemm_batched(dst, batch, x, y, T::ONE, acc);
            }
        }
        Plan::Sum { batch, x, y } => {
            let (x, y) = (operand(x, &src), operand(y, &src));
            for i in 0..batch {
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
