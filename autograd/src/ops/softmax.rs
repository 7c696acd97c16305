//! Fused softmax and log-softmax over the last axis.
//!
//! Softmax `y = e^(x - max) / Σ e^(x - max)` has VJP `∂x = y ⊙ (g - ⟨g, y⟩)` per row;
//! log-softmax `y = x - logsumexp(x)` has `∂x = g - softmax(x)·Σg`. Both keep only the output.

#[cfg(feature = "cuda")]
use crate::device::buf;
use crate::float::Float;
use crate::kernels::PAR_MIN;
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};
use rayon::prelude::*;

/// Runs `f(row_out, row_in...)` over rows of length `d`, in parallel for large tensors.
pub(crate) fn rows_mut<T: Float>(
    out: &mut [T],
    d: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if d == 0 {
        return;
    }
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(d).enumerate().for_each(|(r, o)| f(r, o));
    } else {
        out.chunks_mut(d).enumerate().for_each(|(r, o)| f(r, o));
    }
}

/// `log Σ e^x` of one row, stable.
pub(crate) fn logsumexp<T: Float>(row: &[T]) -> T {
    let m = row.iter().copied().fold(-T::INFINITY, T::max);
    if !m.is_finite() {
        return m;
    }
    let s: T = row.iter().map(|&v| (v - m).exp_fast()).sum();
    m + s.ln()
}

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
        let (y, d, log) = (self.y.data(), self.d, self.log);
        rows_mut(dst, d, |r, out| {
            let (yr, gr) = (&y[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
            if log {
                let s: T = gr.iter().copied().sum();
                for i in 0..d {
                    let v = gr[i] - yr[i].exp_fast() * s;
                    out[i] = if acc { out[i] + v } else { v };
                }
            } else {
                let dot: T = gr.iter().zip(yr).map(|(&a, &b)| a * b).sum();
                for i in 0..d {
                    let v = yr[i] * (gr[i] - dot);
                    out[i] = if acc { out[i] + v } else { v };
                }
            }
        });
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
    rows_mut(&mut out, d, |r, o| {
        let row = &xs[r * d..(r + 1) * d];
        let lse = logsumexp(row);
        for i in 0..d {
            o[i] = if log {
                row[i] - lse
            } else {
                (row[i] - lse).exp_fast()
            };
        }
    });
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
