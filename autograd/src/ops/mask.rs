//! Masking: `masked_fill` (for example the causal mask of attention) and dropout with a given
//! mask (so that one mask can be reused across every solver iteration: variational dropout).

use super::broadcast::{broadcast_shape, broadcast_strides, walk2};
#[cfg(feature = "cuda")]
use crate::device::{buf, common_device};
use crate::float::Float;
use crate::kernels::{self, PAR_MIN};
use crate::rng::Rng;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};
use rayon::prelude::*;

/// A boolean mask with a shape; `true` marks entries to replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    shape: Shape,
    data: Vec<bool>,
}

impl Mask {
    /// Wraps values with a shape. Panics if the lengths disagree.
    pub fn new(data: Vec<bool>, shape: &[usize]) -> Self {
        let numel: usize = shape.iter().product();
        assert_eq!(
            data.len(),
            numel,
            "Mask::new: {} values for shape {shape:?}",
            data.len()
        );
        Mask {
            shape: Shape::from_slice(shape),
            data,
        }
    }

    /// The `[t, t]` causal mask: entry `(i, j)` is masked when `j > i` (a query may not look
    /// at later keys).
    pub fn causal(t: usize) -> Self {
        Self::causal_with_memory(t, 0)
    }

    /// The `[t, m + t]` causal mask for `t` queries over `m` memory positions followed by the
    /// `t` current ones: query `i` sees keys `j ≤ m + i`.
    pub fn causal_with_memory(t: usize, m: usize) -> Self {
        let data = (0..t)
            .flat_map(|i| (0..m + t).map(move |j| j > m + i))
            .collect();
        Mask::new(data, &[t, m + t])
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values.
    pub fn data(&self) -> &[bool] {
        &self.data
    }
}

struct MaskedFillBackward {
    keep: Vec<bool>,
    out: Shape,
    strides: Shape,
}

impl<T: Float> Backward<T> for MaskedFillBackward {
    fn name(&self) -> &'static str {
        "masked_fill"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let keep = &self.keep;
        match repeated_block(&self.out, &self.strides) {
            Some(block) => {
                let pass = |(d, gs): (&mut [T], &[T])| {
                    for ((d, &g), &k) in d.iter_mut().zip(gs).zip(keep) {
                        let v = if k { g } else { T::ZERO };
                        *d = if acc { *d + v } else { v };
                    }
                };
                if g.len() >= PAR_MIN {
                    dst.par_chunks_mut(block)
                        .zip(g.par_chunks(block))
                        .for_each(pass);
                } else {
                    dst.chunks_mut(block).zip(g.chunks(block)).for_each(pass);
                }
            }
            None => walk2(&self.out, &self.strides, &self.strides, |j, im, _| {
                let v = if keep[im] { g[j] } else { T::ZERO };
                dst[j] = if acc { dst[j] + v } else { v };
            }),
        }
    }
}

/// The backward rule of a masked fill recorded on a CUDA device: the mask (true = filled) as
/// device `i32` values, read through the broadcast strides.
#[cfg(feature = "cuda")]
struct MaskedFillBackwardGpu {
    mask: deq_cuda::IndexBuffer,
    out: Shape,
    strides: Shape,
}

#[cfg(feature = "cuda")]
impl<T: Float> Backward<T> for MaskedFillBackwardGpu {
    fn name(&self) -> &'static str {
        "masked_fill"
    }

    fn vjp(&self, _k: usize, _g: &[T], _dst: &mut [T], _acc: bool) {
        unreachable!("masked_fill: recorded on a CUDA device, differentiated on the host")
    }

    fn vjp_gpu(
        &self,
        _k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        deq_cuda::ops::mask::masked_fill_backward(
            g,
            &self.out,
            &self.mask,
            &self.strides,
            dst,
            acc,
        );
    }
}

/// The forward pass of [`Var::masked_fill`] on a CUDA device.
#[cfg(feature = "cuda")]
fn masked_fill_gpu<T: Float>(
    x: &Var<T>,
    xb: &deq_cuda::GpuBuffer<T>,
    mask: &Mask,
    value: f64,
    out: Shape,
    strides: Shape,
) -> Var<T> {
    let m = deq_cuda::ops::mask::upload_mask(xb.gpu(), mask.data());
    let y = deq_cuda::ops::mask::masked_fill(xb, &out, &m, &strides, value);
    record(Tensor::from_gpu(y, &out), &[x], move || {
        MaskedFillBackwardGpu {
            mask: m,
            out,
            strides,
        }
    })
}

struct DropoutBackward<T: Float> {
    mask: Tensor<T>,
    out: Shape,
    strides: Shape,
}

impl<T: Float> Backward<T> for DropoutBackward<T> {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let m = self.mask.data();
        if self.mask.shape() == &self.out[..] {
            kernels::zip_into(dst, g, m, |g, m| g * m, acc);
            return;
        }
        walk2(&self.out, &self.strides, &self.strides, |j, im, _| {
            let v = g[j] * m[im];
            dst[j] = if acc { dst[j] + v } else { v };
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
        let m = buf("dropout", &self.mask);
        deq_cuda::ops::mask::mask_mul(g, m, &self.out, &self.strides, dst, acc);
    }
}

/// When a mask broadcast over `out` (with `strides`) is the whole mask repeated over leading
/// axes (its strides are 0 on a leading run of axes and row-major on the rest), the length of
/// one repetition; `None` for any other broadcast.
fn repeated_block(out: &[usize], strides: &[usize]) -> Option<usize> {
    let lead = strides.iter().take_while(|&&s| s == 0).count();
    let mut expect = 1;
    for ax in (lead..out.len()).rev() {
        if out[ax] != 1 && strides[ax] != expect {
            return None;
        }
        expect *= out[ax];
    }
    (expect > 0).then_some(expect)
}

fn mask_strides(op: &str, mask: &[usize], x: &[usize]) -> Shape {
    let b = broadcast_shape(op, x, mask);
    assert!(
        b[..] == *x,
        "{op}: mask of shape {mask:?} does not broadcast to input shape {x:?}"
    );
    broadcast_strides(mask, x)
}

/// A dropout mask: each entry is `0` with probability `p`, else `1 / (1 - p)` (inverted
/// dropout, so the expected value is unchanged). Draw one per forward pass and reuse it for
/// every solver iteration. Panics unless `0 ≤ p < 1`.
pub fn dropout_mask<T: Float>(shape: &[usize], p: f64, rng: &mut Rng) -> Tensor<T> {
    assert!(
        (0.0..1.0).contains(&p),
        "dropout_mask: probability {p} outside [0, 1)"
    );
    let keep = T::from_f64(1.0 / (1.0 - p));
    Tensor::from_fn(shape, |_| if rng.uniform() < p { T::ZERO } else { keep })
}

impl<T: Float> Var<T> {
    /// Replaces the entries where `mask` (broadcast to this shape) is true by `value`.
    /// Use `f64::NEG_INFINITY` before a softmax to hide positions.
    pub fn masked_fill(&self, mask: &Mask, value: f64) -> Var<T> {
        let out = Shape::from_slice(self.shape());
        let strides = mask_strides("masked_fill", mask.shape(), &out);
        #[cfg(feature = "cuda")]
        if let Some(xb) = self.value().gpu() {
            return masked_fill_gpu(self, xb, mask, value, out, strides);
        }
        let (x, m, fill) = (self.value().data(), mask.data(), T::from_f64(value));
        let mut values = crate::pool::take(x.len());
        match repeated_block(&out, &strides) {
            // The usual case (a causal mask over [B, H, T, K] scores): the mask repeats whole,
            // so each block is a straight zip, in parallel over blocks.
            Some(block) => {
                let fill_block = |(o, xs): (&mut [T], &[T])| {
                    for ((o, &x), &masked) in o.iter_mut().zip(xs).zip(m) {
                        *o = if masked { fill } else { x };
                    }
                };
                let pairs = values.par_chunks_mut(block).zip(x.par_chunks(block));
                if x.len() >= PAR_MIN {
                    pairs.for_each(fill_block);
                } else {
                    values
                        .chunks_mut(block)
                        .zip(x.chunks(block))
                        .for_each(fill_block);
                }
            }
            None => walk2(&out, &strides, &strides, |j, im, _| {
                values[j] = if m[im] { fill } else { x[j] }
            }),
        }
        record(Tensor::from_vec(values, &out), &[self], || {
            MaskedFillBackward {
                keep: m.iter().map(|&b| !b).collect(),
                out: out.clone(),
                strides: strides.clone(),
            }
        })
    }

    /// Multiplies by a dropout mask (see [`dropout_mask`]) broadcast to this shape; for
    /// variational dropout draw the mask with size 1 on the time axis.
    pub fn dropout(&self, mask: &Tensor<T>) -> Var<T> {
        let out = Shape::from_slice(self.shape());
        let strides = mask_strides("dropout", mask.shape(), &out);
        #[cfg(feature = "cuda")]
        if let crate::Device::Cuda(_) = common_device("dropout", &[self.value(), mask]) {
            let (xb, mb) = (buf("dropout", self.value()), buf("dropout", mask));
            let y = deq_cuda::ops::mask::dropout(xb, mb, &out, &strides);
            return record(Tensor::from_gpu(y, &out), &[self], || DropoutBackward {
                mask: mask.clone(),
                out: out.clone(),
                strides: strides.clone(),
            });
        }
        let (x, m) = (self.value().data(), mask.data());
        let mut values = crate::pool::take(x.len());
        if mask.shape() == self.shape() {
            kernels::zip_into(&mut values, x, m, |x, m| x * m, false);
        } else {
            walk2(&out, &strides, &strides, |j, im, _| {
                values[j] = x[j] * m[im]
            });
        }
        record(Tensor::from_vec(values, &out), &[self], || {
            DropoutBackward {
                mask: mask.clone(),
                out: out.clone(),
                strides: strides.clone(),
            }
        })
    }
}
