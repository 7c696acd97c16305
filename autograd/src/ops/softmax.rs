//! Fused softmax and log-softmax over the last axis.
//!
//! Softmax `y = e^(x - max) / Σ e^(x - max)` has VJP `∂x = y ⊙ (g - ⟨g, y⟩)` per row;
//! log-softmax `y = x - logsumexp(x)` has `∂x = g - softmax(x)·Σg`. Both keep only the output.
//! The CPU loops are in [`crate::cpu::softmax`].

use crate::cpu::softmax as kernel;
#[cfg(feature = "cuda")]
use crate::device::buf;
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

fn last_dim(op: &str, shape: &[usize]) -> usize {
    *shape
        .last()
        .unwrap_or_else(|| panic!("{op}: needs at least one dimension, got shape {shape:?}"))
}

struct SoftmaxBackward<T: Float> {
    y: Tensor<T>,
    d: usize,
    log: bool,
}

impl<T: Float> Backward<T> for SoftmaxBackward<T> {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        kernel::backward(self.y.data(), g, self.d, self.log, dst, acc);
    }

    fn vjp_in_place(&self, _k: usize, g: &mut [T]) -> bool {
        kernel::backward_in_place(self.y.data(), g, self.d, self.log);
        true
    }

    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        _k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        let y = buf(self.name(), &self.y);
        deq_cuda::ops::softmax::softmax_backward(g, y, self.d, self.log, dst, acc);
    }
}

fn softmax_impl<T: Float>(x: &Var<T>, log: bool) -> Var<T> {
    let d = last_dim(if log { "log_softmax" } else { "softmax" }, x.shape());
    #[cfg(feature = "cuda")]
    if let Some(xb) = x.value().gpu() {
        let value = Tensor::from_gpu(deq_cuda::ops::softmax::softmax(xb, d, log), x.shape());
        let y = value.clone();
        return record(value, &[x], move || SoftmaxBackward { y, d, log });
    }
    let xs = x.value().data();
    let mut out = crate::pool::take(xs.len());
    kernel::forward(xs, d, log, &mut out);
    let value = Tensor::from_vec(out, x.shape());
    let y = value.clone();
    record(value, &[x], move || SoftmaxBackward { y, d, log })
}

impl<T: Float> Var<T> {
    /// Softmax over the last axis.
    pub fn softmax(&self) -> Var<T> {
        softmax_impl(self, false)
    }

    /// Log-softmax over the last axis.
    pub fn log_softmax(&self) -> Var<T> {
        softmax_impl(self, true)
    }
}
