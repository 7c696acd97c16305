//! Causal 1-D convolution over time with dilation: `[B, T, C_in] -> [B, T, C_out]`.
//!
//! `y[b, t] = bias + Σ_j x[b, t - (K-1-j)·d] · W[j]` with `W` of shape `[K, C_in, C_out]` and
//! zeros for negative times (left padding of `(K-1)·d`), so output `t` sees inputs `≤ t` only.
//! Each tap is one matrix product of a time-shifted block of rows (no im2col copy); the VJPs
//! are the matching products `∂x_shift += g·W[j]ᵀ`, `∂W[j] += x_shiftᵀ·g`.
//! On CUDA tensors the taps are cuBLAS products placed by row offsets, batched over `B`
//! (`deq_cuda::ops::conv1d`).

#[cfg(feature = "cuda")]
use crate::device::buf;
use crate::device::common_device;
use crate::float::Float;
use crate::kernels::{self, gemm, Operand};
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

#[derive(Clone, Copy)]
struct ConvDims {
    batch: usize,
    time: usize,
    c_in: usize,
    c_out: usize,
    taps: usize,
    dilation: usize,
}

impl ConvDims {
    #[cfg(feature = "cuda")]
    fn gpu(&self) -> deq_cuda::ops::conv1d::ConvShape {
        deq_cuda::ops::conv1d::ConvShape {
            batch: self.batch,
            time: self.time,
            c_in: self.c_in,
            c_out: self.c_out,
            taps: self.taps,
            dilation: self.dilation,
        }
    }

    /// Time shift of tap `j`.
    fn shift(&self, j: usize) -> usize {
        (self.taps - 1 - j) * self.dilation
    }

    fn rows<'a, T>(&self, data: &'a [T], b: usize, from: usize, count: usize, c: usize) -> &'a [T] {
        let start = (b * self.time + from) * c;
        &data[start..start + count * c]
    }
}

struct Conv1dBackward<T: Float> {
    x: Tensor<T>,
    w: Tensor<T>,
    d: ConvDims,
}

impl<T: Float> Conv1dBackward<T> {
    fn grad_x(&self, g: &[T], dst: &mut [T], acc: bool) {
        let d = self.d;
        kernels::prepare(dst, acc);
        for b in 0..d.batch {
            for j in 0..d.taps {
                let s = d.shift(j);
                if s >= d.time {
                    continue;
                }
                let n = d.time - s;
                let start = b * d.time * d.c_in;
                let out = &mut dst[start..start + n * d.c_in];
                let gs = Operand {
                    data: d.rows(g, b, s, n, d.c_out),
                    rows: n,
                    cols: d.c_out,
                    trans: false,
                };
                let wj = Operand {
                    data: tap(&self.w, j, d),
                    rows: d.c_in,
                    cols: d.c_out,
                    trans: true,
                };
                gemm(out, gs, wj, T::ONE, true);
            }
        }
    }

    fn grad_w(&self, g: &[T], dst: &mut [T], acc: bool) {
        let d = self.d;
        kernels::prepare(dst, acc);
        let x = self.x.data();
        for j in 0..d.taps {
            let s = d.shift(j);
            if s >= d.time {
                continue;
            }
            let n = d.time - s;
            let out = &mut dst[j * d.c_in * d.c_out..(j + 1) * d.c_in * d.c_out];
            for b in 0..d.batch {
                let xs = Operand {
                    data: d.rows(x, b, 0, n, d.c_in),
                    rows: n,
                    cols: d.c_in,
                    trans: true,
                };
                let gs = Operand {
                    data: d.rows(g, b, s, n, d.c_out),
                    rows: n,
                    cols: d.c_out,
                    trans: false,
                };
                gemm(out, xs, gs, T::ONE, true);
            }
        }
    }

    fn grad_bias(&self, g: &[T], dst: &mut [T], acc: bool) {
        kernels::prepare(dst, acc);
        for row in g.chunks(self.d.c_out) {
            dst.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
        }
    }
}

fn tap<T: Float>(w: &Tensor<T>, j: usize, d: ConvDims) -> &[T] {
    &w.data()[j * d.c_in * d.c_out..(j + 1) * d.c_in * d.c_out]
}

impl<T: Float> Backward<T> for Conv1dBackward<T> {
    fn name(&self) -> &'static str {
        "causal_conv1d"
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        match k {
            0 => self.grad_x(g, dst, acc),
            1 => self.grad_w(g, dst, acc),
            _ => self.grad_bias(g, dst, acc),
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
        use deq_cuda::ops::conv1d as gpu;
        let d = self.d.gpu();
        match k {
            0 => gpu::grad_input(g, buf("causal_conv1d", &self.w), d, dst, acc),
            1 => gpu::grad_weight(g, buf("causal_conv1d", &self.x), d, dst, acc),
            _ => gpu::grad_bias(g, d, dst, acc),
        }
    }
}

/// The convolution on the device.
#[cfg(feature = "cuda")]
fn forward_gpu<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Var<T>>,
    d: ConvDims,
) -> Tensor<T> {
    let op = "causal_conv1d";
    let b = bias.map(|b| buf(op, b.value()));
    let y = deq_cuda::ops::conv1d::forward(buf(op, x), buf(op, w), b, d.gpu());
    Tensor::from_gpu(y, &[d.batch, d.time, d.c_out])
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
        #[cfg(feature = "cuda")]
        if self.value().gpu().is_some() {
            let value = forward_gpu(self.value(), weight.value(), bias, d);
            return match bias {
                Some(b) => record(value, &[self, weight, b], make),
                None => record(value, &[self, weight], make),
            };
        }
        let x = self.value().data();
        let mut out = crate::pool::take_zeroed(d.batch * d.time * d.c_out);
        if let Some(b) = bias {
            for row in out.chunks_mut(d.c_out) {
                row.copy_from_slice(b.value().data());
            }
        }
        for b in 0..d.batch {
            for j in 0..d.taps {
                let s = d.shift(j);
                if s >= d.time {
                    continue;
                }
                let n = d.time - s;
                let start = (b * d.time + s) * d.c_out;
                let dst = &mut out[start..start + n * d.c_out];
                let xs = Operand {
                    data: d.rows(x, b, 0, n, d.c_in),
                    rows: n,
                    cols: d.c_in,
                    trans: false,
                };
                let wj = Operand {
                    data: tap(weight.value(), j, d),
                    rows: d.c_in,
                    cols: d.c_out,
                    trans: false,
                };
                gemm(dst, xs, wj, T::ONE, true);
            }
        }
        let value = Tensor::from_vec(out, &[d.batch, d.time, d.c_out]);
        match bias {
            Some(b) => record(value, &[self, weight, b], make),
            None => record(value, &[self, weight], make),
        }
    }
}
