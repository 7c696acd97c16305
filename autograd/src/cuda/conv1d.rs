//! The causal dilated convolution on a CUDA device ([`crate::ops::conv1d`]): cuBLAS products
//! placed by row offsets, batched over `B` (`deq_cuda::ops::conv1d`).

use crate::device::buf;
use crate::float::Float;
use crate::ops::conv1d::ConvDims;
use crate::tensor::Tensor;
use deq_cuda::ops::conv1d::{self as gpu, ConvShape};
use deq_cuda::GpuBuffer;

const OP: &str = "causal_conv1d";

fn shape(d: ConvDims) -> ConvShape {
    ConvShape {
        batch: d.batch,
        time: d.time,
        c_in: d.c_in,
        c_out: d.c_out,
        taps: d.taps,
        dilation: d.dilation,
    }
}

/// The convolution, `[B, T, C_out]`.
pub(crate) fn forward<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    d: ConvDims,
) -> Tensor<T> {
    let b = bias.map(|b| buf(OP, b));
    let y = gpu::forward(buf(OP, x), buf(OP, w), b, shape(d));
    Tensor::from_gpu(y, &[d.batch, d.time, d.c_out])
}

/// `dst (+)= ∂x`.
pub(crate) fn grad_input<T: Float>(
    g: &GpuBuffer<T>,
    w: &Tensor<T>,
    d: ConvDims,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::grad_input(g, buf(OP, w), shape(d), dst, acc);
}

/// `dst (+)= ∂W`.
pub(crate) fn grad_weight<T: Float>(
    g: &GpuBuffer<T>,
    x: &Tensor<T>,
    d: ConvDims,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::grad_weight(g, buf(OP, x), shape(d), dst, acc);
}

/// `dst (+)= Σ_rows g` (`∂bias`).
pub(crate) fn grad_bias<T: Float>(
    g: &GpuBuffer<T>,
    d: ConvDims,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    gpu::grad_bias(g, shape(d), dst, acc);
}
