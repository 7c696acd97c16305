//! Fused cross-entropy from logits with integer targets, averaged over rows.
//!
//! `L = (1/N) Σ_r (logsumexp(x_r) - x_r[t_r])`; its VJP is `∂x_r = g·(softmax(x_r) - e_{t_r})/N`.
//! When recording, the forward pass already computes `(softmax(x) - e_t)/N` (it needs the
//! exponentials for the log-sum-exp anyway) and keeps it instead of the logits, so the
//! backward pass is one scaling and the exponentials are evaluated once.

use super::softmax::rows_mut;
use crate::float::Float;
use crate::kernels::{self, PAR_MIN};
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{is_recording, record, Var};
use rayon::prelude::*;

struct CrossEntropyBackward<T: Float> {
    /// `(softmax(x) - onehot(t)) / N`, the gradient for a unit cotangent.
    unit_grad: Vec<T>,
}

impl<T: Float> Backward<T> for CrossEntropyBackward<T> {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let s = g[0];
        kernels::map_into(dst, &self.unit_grad, |v| v * s, acc);
    }
}

/// The backward rule of a cross-entropy recorded on a CUDA device.
#[cfg(feature = "cuda")]
struct CrossEntropyBackwardGpu<T: Float> {
    /// `(softmax(x) - onehot(t)) / N` on the device, the gradient for a unit cotangent.
    unit_grad: deq_cuda::GpuBuffer<T>,
}

#[cfg(feature = "cuda")]
impl<T: Float> Backward<T> for CrossEntropyBackwardGpu<T> {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn vjp(&self, _k: usize, _g: &[T], _dst: &mut [T], _acc: bool) {
        unreachable!("cross_entropy: recorded on a CUDA device, differentiated on the host")
    }

    /// `dst (+)= g·unit_grad`, with the scalar cotangent `g` read on the device.
    fn vjp_gpu(
        &self,
        _k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        deq_cuda::ops::elementwise::scale_by_device_scalar(&self.unit_grad, g, dst, acc);
    }
}

/// The forward pass on a CUDA device (targets already validated): the mean loss, and the unit
/// gradient when the result is recorded.
#[cfg(feature = "cuda")]
fn cross_entropy_gpu<T: Float>(
    logits: &Var<T>,
    x: &deq_cuda::GpuBuffer<T>,
    targets: &[usize],
    c: usize,
) -> Var<T> {
    let want_grad = is_recording() && logits.is_recorded();
    let t = deq_cuda::ops::embedding::upload_indices(x.gpu(), targets, "cross_entropy");
    let (loss, unit_grad) = deq_cuda::ops::cross_entropy::cross_entropy(x, &t, c, want_grad);
    let value = Tensor::from_gpu(loss, &[]);
    match unit_grad {
        Some(unit_grad) => record(value, &[logits], || CrossEntropyBackwardGpu { unit_grad }),
        None => Var::constant(value),
    }
}

/// Per row: the log-sum-exp, and (if `grad` is given) `(softmax - e_t)/N` written into it.
fn row_pass<T: Float>(row: &[T], target: usize, inv_n: T, grad: Option<&mut [T]>) -> T {
    let m = row.iter().copied().fold(-T::INFINITY, T::max);
    match grad {
        None => {
            let s: T = row.iter().map(|&v| (v - m).exp_fast()).sum();
            m + s.ln()
        }
        Some(out) => {
            let mut s = T::ZERO;
            for (o, &v) in out.iter_mut().zip(row) {
                let e = (v - m).exp_fast();
                *o = e;
                s += e;
            }
            let scale = inv_n / s;
            out.iter_mut().for_each(|o| *o *= scale);
            out[target] -= inv_n;
            m + s.ln()
        }
    }
}

impl<T: Float> Var<T> {
    /// Mean cross-entropy of `self` (logits `[..., C]`, rows flattened) against one class index
    /// per row. Panics if the counts disagree or a target is out of range.
    pub fn cross_entropy(&self, targets: &[usize]) -> Var<T> {
        let shape = self.shape();
        let c = *shape.last().unwrap_or(&0);
        let rows = self.numel().checked_div(c).unwrap_or(0);
        assert!(
            c > 0 && rows == targets.len(),
            "cross_entropy: logits of shape {shape:?} for {} targets",
            targets.len()
        );
        if let Some(&t) = targets.iter().find(|&&t| t >= c) {
            panic!("cross_entropy: target {t} out of range for {c} classes");
        }
        #[cfg(feature = "cuda")]
        if let Some(x) = self.value().gpu() {
            return cross_entropy_gpu(self, x, targets, c);
        }
        let x = self.value().data();
        let inv_n = T::ONE / T::from_usize(rows.max(1));
        let want_grad = is_recording() && self.is_recorded();
        let mut lse = vec![T::ZERO; rows];
        let mut unit_grad = if want_grad {
            crate::pool::take(x.len())
        } else {
            Vec::new()
        };
        if want_grad {
            let lse_ptr = SyncPtr(lse.as_mut_ptr());
            rows_mut(&mut unit_grad, c, |r, out| {
                let v = row_pass(&x[r * c..(r + 1) * c], targets[r], inv_n, Some(out));
                // SAFETY: each row index r is visited exactly once, so writes are disjoint.
                unsafe { *lse_ptr.get().add(r) = v };
            });
        } else {
            // One output per row of `c` logits: parallel by the logits read, not the outputs.
            let pass = |(r, o): (usize, &mut T)| {
                *o = row_pass(&x[r * c..(r + 1) * c], targets[r], inv_n, None)
            };
            if x.len() >= PAR_MIN {
                let rows_per_task = (PAR_MIN / c).max(1);
                lse.par_iter_mut()
                    .enumerate()
                    .with_min_len(rows_per_task)
                    .for_each(pass);
            } else {
                lse.iter_mut().enumerate().for_each(pass);
            }
        }
        let total: f64 = targets
            .iter()
            .enumerate()
            .map(|(r, &t)| (lse[r] - x[r * c + t]).to_f64())
            .sum();
        let value = Tensor::scalar(T::from_f64(total / rows.max(1) as f64));
        record(value, &[self], || CrossEntropyBackward { unit_grad })
    }
}

/// A raw pointer that may cross threads (rows are written disjointly).
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: used only for disjoint per-row writes inside `rows_mut`.
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}
