//! The fused affine map of a linear layer: `y = x·Wᵀ + b` over the last axis.
//!
//! One pass: the output rows start as copies of `b` and one product accumulates `x·Wᵀ` into
//! them, so no separate bias-add tensor is allocated. With `x` viewed as `[R, in]` and `W` as
//! `[out, in]`, the VJPs are `∂x = G·W`, `∂W = Gᵀ·x` and `∂b = Σ_rows G`. The kernels are in
//! `crate::cpu::linear` and `crate::cuda::linear`.

use crate::cpu::linear as cpu;
use crate::device::{common_device, cuda_vjp, on_cuda, Device};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

/// The sizes of one linear map: `rows` input rows of `inp` values, `out` outputs per row.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) rows: usize,
    pub(crate) inp: usize,
    pub(crate) out: usize,
}

struct LinearBackward<T: Float> {
    x: Tensor<T>,
    w: Tensor<T>,
    s: Dims,
}

impl<T: Float> Backward<T> for LinearBackward<T> {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        match k {
            0 => cpu::grad_input(g, self.w.data(), self.s, dst, acc),
            1 => cpu::grad_weight(g, self.x.data(), self.s, dst, acc),
            _ => cpu::bias_grad(g, self.s.out, dst, acc),
        }
    }

    cuda_vjp!(|op, k, g, dst, acc| match k {
        0 => crate::cuda::linear::grad_input(g, &op.w, op.s, dst, acc),
        1 => crate::cuda::linear::grad_weight(g, &op.x, op.s, dst, acc),
        _ => crate::cuda::linear::grad_bias(g, op.s, dst, acc),
    });
}

/// The forward kernel on the operands' device (checked to be one), shaped `out`.
fn forward<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    s: Dims,
    out: &[usize],
) -> Tensor<T> {
    match x.device() {
        Device::Cpu => {
            let mut values = crate::pool::take(s.rows * s.out);
            cpu::forward(x.data(), w.data(), bias.map(Tensor::data), s, &mut values);
            Tensor::from_vec(values, out)
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::linear::forward(x, w, bias, s, out)),
    }
}

impl<T: Float> Var<T> {
    /// `self·weightᵀ + bias` over the last axis: `self` is `[..., in]`, `weight` is
    /// `[out, in]` (PyTorch's layout), `bias` is `[out]`; the result is `[..., out]`.
    pub fn linear(&self, weight: &Var<T>, bias: Option<&Var<T>>) -> Var<T> {
        let (xs, ws) = (self.shape(), weight.shape());
        let ok = !xs.is_empty() && ws.len() == 2 && ws[1] == xs[xs.len() - 1];
        assert!(
            ok,
            "linear: input shape {xs:?} and weight shape {ws:?} are not compatible (need [..., in] and [out, in])"
        );
        let (out, inp) = (ws[0], ws[1]);
        if let Some(b) = bias {
            assert!(
                b.shape() == [out],
                "linear: bias shape {:?} does not match weight shape {ws:?}",
                b.shape()
            );
        }
        let rows = self
            .numel()
            .checked_div(inp)
            .unwrap_or_else(|| xs[..xs.len() - 1].iter().product());
        let mut shape = Shape::from_slice(&xs[..xs.len() - 1]);
        shape.push(out);
        let s = Dims { rows, inp, out };
        let make = || LinearBackward {
            x: self.value().clone(),
            w: weight.value().clone(),
            s,
        };
        match bias {
            Some(b) => common_device("linear", &[self.value(), weight.value(), b.value()]),
            None => common_device("linear", &[self.value(), weight.value()]),
        };
        let value = forward(
            self.value(),
            weight.value(),
            bias.map(Var::value),
            s,
            &shape,
        );
        match bias {
            Some(b) => record(value, &[self, weight, b], make),
            None => record(value, &[self, weight], make),
        }
    }
}
