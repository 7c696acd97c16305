//! The fused affine map of a linear layer: `y = x·Wᵀ + b` over the last axis.
//!
//! One pass: the output rows start as copies of `b` and one product accumulates `x·Wᵀ` into
//! them, so no separate bias-add tensor is allocated. With `x` viewed as `[R, in]` and `W` as
//! `[out, in]`, the VJPs are `∂x = G·W`, `∂W = Gᵀ·x` and `∂b = Σ_rows G`.

#[cfg(feature = "cuda")]
use crate::device::buf;
use crate::device::common_device;
use crate::float::Float;
use crate::kernels::{self, gemm, Operand};
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

struct LinearBackward<T: Float> {
    x: Tensor<T>,
    w: Tensor<T>,
    rows: usize,
}

impl<T: Float> LinearBackward<T> {
    #[cfg(feature = "cuda")]
    fn gpu_shape(&self) -> deq_cuda::ops::linear::LinearShape {
        deq_cuda::ops::linear::LinearShape {
            rows: self.rows,
            inp: self.w.shape()[1],
            out: self.w.shape()[0],
        }
    }
}

impl<T: Float> Backward<T> for LinearBackward<T> {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let (out, inp) = (self.w.shape()[0], self.w.shape()[1]);
        let gm = Operand {
            data: g,
            rows: self.rows,
            cols: out,
            trans: false,
        };
        match k {
            0 => {
                let wm = Operand {
                    data: self.w.data(),
                    rows: out,
                    cols: inp,
                    trans: false,
                };
                gemm(dst, gm, wm, T::ONE, acc);
            }
            1 => {
                let xm = Operand {
                    data: self.x.data(),
                    rows: self.rows,
                    cols: inp,
                    trans: false,
                };
                gemm(dst, Operand { trans: true, ..gm }, xm, T::ONE, acc);
            }
            _ => {
                kernels::prepare(dst, acc);
                for row in g.chunks(out) {
                    dst.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
                }
            }
        }
    }

    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        use deq_cuda::ops::linear as gpu;
        let s = self.gpu_shape();
        match k {
            0 => gpu::grad_input(g, buf("linear", &self.w), s, dst, acc),
            1 => gpu::grad_weight(g, buf("linear", &self.x), s, dst, acc),
            _ => gpu::bias_grad(g, s.rows, s.out, dst, acc),
        }
    }
}

/// `x·Wᵀ + b` on the device, `x` viewed as `[rows, in]`.
#[cfg(feature = "cuda")]
fn forward_gpu<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Var<T>>,
    rows: usize,
    shape: &[usize],
) -> Tensor<T> {
    let s = deq_cuda::ops::linear::LinearShape {
        rows,
        inp: w.shape()[1],
        out: w.shape()[0],
    };
    let b = bias.map(|b| buf("linear", b.value()));
    let y = deq_cuda::ops::linear::forward(buf("linear", x), buf("linear", w), b, s);
    Tensor::from_gpu(y, shape)
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
        let make = || LinearBackward {
            x: self.value().clone(),
            w: weight.value().clone(),
            rows,
        };
        match bias {
            Some(b) => common_device("linear", &[self.value(), weight.value(), b.value()]),
            None => common_device("linear", &[self.value(), weight.value()]),
        };
        #[cfg(feature = "cuda")]
        if self.value().gpu().is_some() {
            let value = forward_gpu(self.value(), weight.value(), bias, rows, &shape);
            return match bias {
                Some(b) => record(value, &[self, weight, b], make),
                None => record(value, &[self, weight], make),
            };
        }
        let mut values = crate::pool::take(rows * out);
        if let Some(b) = bias {
            for row in values.chunks_mut(out.max(1)) {
                row.copy_from_slice(b.value().data());
            }
        }
        let xm = Operand {
            data: self.value().data(),
            rows,
            cols: inp,
            trans: false,
        };
        let wm = Operand {
            data: weight.value().data(),
            rows: out,
            cols: inp,
            trans: true,
        };
        gemm(&mut values, xm, wm, T::ONE, bias.is_some());
        let value = Tensor::from_vec(values, &shape);
        match bias {
            Some(b) => record(value, &[self, weight, b], make),
            None => record(value, &[self, weight], make),
        }
    }
}
