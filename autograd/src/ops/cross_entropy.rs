//! Fused cross-entropy from logits with integer targets, averaged over rows.
//!
//! `L = (1/N) Σ_r (logsumexp(x_r) - x_r[t_r])`; its VJP is `∂x_r = g·(softmax(x_r) - e_{t_r})/N`.
//! The forward pass keeps the logits (already alive) and one log-sum-exp per row, not a
//! `[N, C]` probability matrix; the backward pass writes `g·(e^(x − lse) − e_t)/N` straight into
//! the gradient buffer in one pass. The CPU loops are in [`crate::cpu::cross_entropy`].

use crate::cpu::cross_entropy as kernel;
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

struct CrossEntropyBackward<T: Float> {
    logits: Tensor<T>,
    /// `logsumexp(x_r)` per row.
    lse: Vec<T>,
    targets: Vec<usize>,
}

impl<T: Float> Backward<T> for CrossEntropyBackward<T> {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let rows = self.lse.len();
        let c = self.logits.numel().checked_div(rows).unwrap_or(0);
        let scale = g[0] / T::from_usize(rows.max(1));
        kernel::backward(
            self.logits.data(),
            &self.lse,
            &self.targets,
            c,
            scale,
            dst,
            acc,
        );
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
    let want_grad = logits.requires_grad();
    let t = deq_cuda::ops::embedding::upload_indices(x.gpu(), targets, "cross_entropy");
    let (loss, unit_grad) = deq_cuda::ops::cross_entropy::cross_entropy(x, &t, c, want_grad);
    let value = Tensor::from_gpu(loss, &[]);
    match unit_grad {
        Some(unit_grad) => record(value, &[logits], || CrossEntropyBackwardGpu { unit_grad }),
        None => Var::constant(value),
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
        let mut lse = vec![T::ZERO; rows];
        kernel::logsumexp_rows(x, c, &mut lse);
        let total: f64 = targets
            .iter()
            .enumerate()
            .map(|(r, &t)| (lse[r] - x[r * c + t]).to_f64())
            .sum();
        let value = Tensor::scalar(T::from_f64(total / rows.max(1) as f64));
        if !self.requires_grad() {
            return Var::constant(value);
        }
        record(value, &[self], || CrossEntropyBackward {
            logits: self.value().clone(),
            lse,
            targets: targets.to_vec(),
        })
    }
}
