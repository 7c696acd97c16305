//! Causal 1-D convolution over time with dilation: `[B, T, C_in] -> [B, T, C_out]`.
//!
//! `y[b, t] = bias + Σ_j x[b, t - (K-1-j)·d] · W[j]` with `W` of shape `[K, C_in, C_out]` and
//! zeros for negative times (left padding of `(K-1)·d`), so output `t` sees inputs `≤ t` only.
//! Each tap is one matrix product of a time-shifted block of rows (no im2col copy); the VJPs
//! are the matching products `∂x_shift += g·W[j]ᵀ`, `∂W[j] += x_shiftᵀ·g`.
//! On CUDA tensors the taps are cuBLAS products placed by row offsets, batched over `B`
//! (`deq_cuda::ops::conv1d`). The kernels are in `crate::cpu::conv1d` and `crate::cuda::conv1d`.

use crate::cpu::conv1d as cpu;
use crate::device::{common_device, cuda_vjp, on_cuda, Device};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

/// The sizes of one convolution: `[B, T, C_in]` input, `[K, C_in, C_out]` weight, dilation.
#[derive(Clone, Copy)]
pub(crate) struct ConvDims {
    pub(crate) batch: usize,
    pub(crate) time: usize,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) taps: usize,
    pub(crate) dilation: usize,
}

impl ConvDims {
    /// Time shift of tap `j`: `(K - 1 - j)·d`.
    pub(crate) fn shift(&self, j: usize) -> usize {
        (self.taps - 1 - j) * self.dilation
    }
}

struct Conv1dBackward<T: Float> {
    x: Tensor<T>,
    w: Tensor<T>,
    d: ConvDims,
}

impl<T: Float> Backward<T> for Conv1dBackward<T> {
    fn name(&self) -> &'static str {
        "causal_conv1d"
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        match k {
            0 => cpu::grad_input(g, self.w.data(), self.d, dst, acc),
            1 => cpu::grad_weight(g, self.x.data(), self.d, dst, acc),
            _ => crate::cpu::linear::bias_grad(g, self.d.c_out, dst, acc),
        }
    }

    cuda_vjp!(|op, k, g, dst, acc| match k {
        0 => crate::cuda::conv1d::grad_input(g, &op.w, op.d, dst, acc),
        1 => crate::cuda::conv1d::grad_weight(g, &op.x, op.d, dst, acc),
        _ => crate::cuda::conv1d::grad_bias(g, op.d, dst, acc),
    });
}

/// The forward kernel on the operands' device (checked to be one).
fn forward<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    d: ConvDims,
) -> Tensor<T> {
    match x.device() {
        Device::Cpu => {
            let mut out = crate::pool::take_zeroed(d.batch * d.time * d.c_out);
            cpu::forward(x.data(), w.data(), bias.map(Tensor::data), d, &mut out);
            Tensor::from_vec(out, &[d.batch, d.time, d.c_out])
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::conv1d::forward(x, w, bias, d)),
    }
}

impl<T: Float> Var<T> {
    /// Causal convolution of `self` (`[B, T, C_in]`) with `weight` (`[K, C_in, C_out]`) and
    /// dilation `dilation`, plus an optional `bias` (`[C_out]`). See the module docs.
    pub fn causal_conv1d(&self, weight: &Var<T>, bias: Option<&Var<T>>, dilation: usize) -> Var<T> {
        let (xs, ws) = (self.shape(), weight.shape());
        let ok = xs.len() == 3 && ws.len() == 3 && ws[1] == xs[2] && dilation >= 1;
        assert!(
            ok,
            "causal_conv1d: input {xs:?} (needs [B, T, C_in]) and weight {ws:?} (needs [K, C_in, C_out]), dilation {dilation}"
        );
        if let Some(b) = bias {
            assert!(
                b.shape() == [ws[2]],
                "causal_conv1d: bias of shape {:?} for weight {ws:?}",
                b.shape()
            );
        }
        let d = ConvDims {
            batch: xs[0],
            time: xs[1],
            c_in: xs[2],
            c_out: ws[2],
            taps: ws[0],
            dilation,
        };
        let make = || Conv1dBackward {
            x: self.value().clone(),
            w: weight.value().clone(),
            d,
        };
        match bias {
            Some(b) => common_device("causal_conv1d", &[self.value(), weight.value(), b.value()]),
            None => common_device("causal_conv1d", &[self.value(), weight.value()]),
        };
        let value = forward(self.value(), weight.value(), bias.map(Var::value), d);
        match bias {
            Some(b) => record(value, &[self, weight, b], make),
            None => record(value, &[self, weight], make),
        }
    }
}
