//! Fused cross-entropy from logits with integer targets, averaged over rows.
//!
//! `L = (1/N) Σ_r (logsumexp(x_r) - x_r[t_r])`; its VJP is `∂x_r = g·(softmax(x_r) - e_{t_r})/N`.
//! On the host the forward pass keeps the logits (already alive) and one log-sum-exp per row,
//! not a `[N, C]` probability matrix, and the backward pass writes `g·(e^(x − lse) − e_t)/N`
//! straight into the gradient buffer in one pass (the loops are in [`crate::cpu::cross_entropy`]).
//! On a CUDA device the forward kernel also writes the gradient for a unit cotangent, which
//! the VJP scales by `g` (`crate::cuda::cross_entropy`).

use crate::cpu::cross_entropy as cpu;
use crate::device::{cuda_type, cuda_vjp, on_cuda, Device, Kept};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

/// What a host recording keeps: the logits, `logsumexp(x_r)` per row, and the targets.
struct Rows<T: Float> {
    logits: Tensor<T>,
    lse: Vec<T>,
    targets: Vec<usize>,
}

/// What the VJP reads: [`Rows`] on the host; on a device `(softmax(x) - onehot(t)) / N`, the
/// gradient for a unit cotangent.
type Saved<T> = Kept<Rows<T>, cuda_type!(deq_cuda::GpuBuffer<T>)>;

struct CrossEntropyBackward<T: Float> {
    saved: Saved<T>,
}

impl<T: Float> Backward<T> for CrossEntropyBackward<T> {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let Rows {
            logits,
            lse,
            targets,
        } = self.saved.host("cross_entropy");
        let rows = lse.len();
        let c = logits.numel().checked_div(rows).unwrap_or(0);
        let scale = g[0] / T::from_usize(rows.max(1));
        cpu::backward(logits.data(), lse, targets, c, scale, dst, acc);
    }

    cuda_vjp!(|op, _k, g, dst, acc| {
        let unit_grad = op.saved.cuda("cross_entropy");
        crate::cuda::cross_entropy::backward(g, unit_grad, dst, acc)
    });
}

/// The loss kernel on the logits' device (`N × c` logits, targets validated), and what the VJP
/// needs when `want_grad`.
fn forward<T: Float>(
    logits: &Tensor<T>,
    targets: &[usize],
    c: usize,
    want_grad: bool,
) -> (Tensor<T>, Option<Saved<T>>) {
    match logits.device() {
        Device::Cpu => {
            let x = logits.data();
            let mut lse = vec![T::ZERO; targets.len()];
            cpu::logsumexp_rows(x, c, &mut lse);
            let loss = Tensor::scalar(T::from_f64(cpu::mean_loss(x, &lse, targets, c)));
            let saved = want_grad.then(|| {
                Kept::Host(Rows {
                    logits: logits.clone(),
                    lse,
                    targets: targets.to_vec(),
                })
            });
            (loss, saved)
        }
        Device::Cuda(_) => on_cuda!({
            let (loss, unit_grad) =
                crate::cuda::cross_entropy::forward(logits, targets, c, want_grad);
            (loss, unit_grad.map(Kept::Cuda))
        }),
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
        match forward(self.value(), targets, c, self.requires_grad()) {
            (value, Some(saved)) => record(value, &[self], || CrossEntropyBackward { saved }),
            (value, None) => Var::constant(value),
        }
    }
}
