//! Fused softmax and log-softmax over the last axis.
//!
//! Softmax `y = e^(x - max) / Σ e^(x - max)` has VJP `∂x = y ⊙ (g - ⟨g, y⟩)` per row;
//! log-softmax `y = x - logsumexp(x)` has `∂x = g - softmax(x)·Σg`. Both keep only the output.
//! The CPU loops are in [`crate::cpu::softmax`], the device kernels in `crate::cuda::softmax`.

use crate::cpu::softmax as cpu;
use crate::device::{cuda_vjp, on_cuda, Device};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

fn last_dim(op: &str, shape: &[usize]) -> usize {
    *shape
        .last()
        .unwrap_or_else(|| panic!("{op}: needs at least one dimension, got shape {shape:?}"))
}

fn name(log: bool) -> &'static str {
    if log {
        "log_softmax"
    } else {
        "softmax"
    }
}

struct SoftmaxBackward<T: Float> {
    y: Tensor<T>,
    d: usize,
    log: bool,
}

impl<T: Float> Backward<T> for SoftmaxBackward<T> {
    fn name(&self) -> &'static str {
        name(self.log)
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        cpu::backward(self.y.data(), g, self.d, self.log, dst, acc);
    }

    fn vjp_in_place(&self, _k: usize, g: &mut [T]) -> bool {
        cpu::backward_in_place(self.y.data(), g, self.d, self.log);
        true
    }

    cuda_vjp!(|op, _k, g, dst, acc| {
        crate::cuda::softmax::backward(name(op.log), g, &op.y, op.d, op.log, dst, acc)
    });
}

/// The forward kernel on `x`'s device.
fn forward<T: Float>(x: &Tensor<T>, d: usize, log: bool) -> Tensor<T> {
    match x.device() {
        Device::Cpu => {
            let xs = x.data();
            let mut out = crate::pool::take(xs.len());
            cpu::forward(xs, d, log, &mut out);
            Tensor::from_vec(out, x.shape())
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::softmax::forward(name(log), x, d, log)),
    }
}

fn softmax_impl<T: Float>(x: &Var<T>, log: bool) -> Var<T> {
    let d = last_dim(name(log), x.shape());
    let value = forward(x.value(), d, log);
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
