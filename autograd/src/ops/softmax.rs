//! Fused softmax and log-softmax over the last axis.
//!
//! Softmax `y = e^(x - max) / Σ e^(x - max)` has VJP `∂x = y ⊙ (g - ⟨g, y⟩)` per row;
//! log-softmax `y = x - logsumexp(x)` has `∂x = g - softmax(x)·Σg`. Both keep only the output.
//! [`Var::masked_softmax`] is softmax over the entries a [`Mask`] keeps, in one pass: the VJP
//! is softmax's (masked entries have `y = 0`, so their gradient is zero), which is why it
//! equals `masked_fill(mask, −∞)` followed by `softmax` without keeping anything more.
//! The CPU loops are in [`crate::cpu::softmax`], the device kernels in `crate::cuda::softmax`.

use crate::cpu::softmax as cpu;
use crate::device::{cuda_vjp, on_cuda, Device};
use crate::float::Float;
use crate::ops::mask::Mask;
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

/// [`Var::masked_softmax`]: the fused row kernel on the host; on a device the composition
/// `masked_fill(−∞)` then softmax (same values and VJP where a row keeps an entry).
fn masked_softmax_impl<T: Float>(x: &Var<T>, mask: &Mask) -> Var<T> {
    let shape = x.shape();
    let d = last_dim("masked_softmax", shape);
    let ms = mask.shape();
    assert!(
        !ms.is_empty() && ms.len() <= shape.len() && shape.ends_with(ms),
        "masked_softmax: mask of shape {ms:?} must be the trailing dimensions of input {shape:?}"
    );
    if x.value().device() != Device::Cpu {
        return x.masked_fill(mask, f64::NEG_INFINITY).softmax();
    }
    let mut out = crate::pool::take(x.value().numel());
    cpu::forward_masked(x.value().data(), mask.data(), d, &mut out);
    let value = Tensor::from_vec(out, shape);
    let y = value.clone();
    record(value, &[x], move || SoftmaxBackward { y, d, log: false })
}

impl<T: Float> Var<T> {
    /// Softmax over the last axis of the entries where `mask` is false; the masked entries
    /// are exactly zero. `mask`'s shape is the input's trailing dimensions (a causal `[T, K]`
    /// mask over `[B, H, T, K]` scores) and repeats over the leading ones. Equal to
    /// `masked_fill(mask, −∞).softmax()` in one pass and one output, with the same VJP, except
    /// that on the host a row with every entry masked (or whose kept entries are all `−∞`) is
    /// zeros here, with a zero gradient, where the composition gives NaN: a fully padded row
    /// does not poison a batch. On a CUDA device this op *is* the composition (no fused kernel
    /// yet), so such a row is NaN there. Panics if the mask is not a suffix of the shape.
    pub fn masked_softmax(&self, mask: &Mask) -> Var<T> {
        masked_softmax_impl(self, mask)
    }

    /// Softmax over the last axis.
    pub fn softmax(&self) -> Var<T> {
        softmax_impl(self, false)
    }

    /// Log-softmax over the last axis.
    pub fn log_softmax(&self) -> Var<T> {
        softmax_impl(self, true)
    }
}
