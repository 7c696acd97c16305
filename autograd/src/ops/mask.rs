//! Masking: `masked_fill` (for example the causal mask of attention) and dropout with a given
//! mask (so that one mask can be reused across every solver iteration: variational dropout).
//!
//! `masked_fill` passes `x` where the mask is false and `value` where it is true, so its VJP is
//! `g` where the mask is false and zero elsewhere; dropout is `x ⊙ m` with VJP `g ⊙ m`. Masks
//! broadcast to the input's shape. The loops are in `crate::cpu::mask` and `crate::cuda::mask`.

use super::broadcast::{broadcast_shape, broadcast_strides};
use crate::cpu::mask as cpu;
use crate::device::{common_device, cuda_type, cuda_vjp, on_cuda, Device, Kept};
use crate::float::Float;
use crate::rng::Rng;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

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

/// What a masked fill keeps of its mask, in the form its device's kernel reads: on the host
/// `true` where the input passes through (the mask negated), on a device the mask (true =
/// filled) as `i32` values, shared with later fills by the same mask.
type KeptMask = Kept<Vec<bool>, cuda_type!(std::sync::Arc<deq_cuda::IndexBuffer>)>;

struct MaskedFillBackward {
    mask: KeptMask,
    out: Shape,
    strides: Shape,
}

impl<T: Float> Backward<T> for MaskedFillBackward {
    fn name(&self) -> &'static str {
        "masked_fill"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let keep = self.mask.host("masked_fill");
        cpu::masked_fill_backward(g, keep, &self.out, &self.strides, dst, acc);
    }

    cuda_vjp!(|op, _k, g, dst, acc| {
        let mask = op.mask.cuda("masked_fill");
        crate::cuda::mask::masked_fill_backward(g, mask, &op.out, &op.strides, dst, acc)
    });
}

/// The masked-fill kernel on `x`'s device, and on a device the mask as uploaded there (a host
/// recording builds its [`KeptMask`] only when it records).
fn masked_fill<T: Float>(
    x: &Tensor<T>,
    mask: &Mask,
    value: f64,
    out: &[usize],
    strides: &[usize],
) -> (Tensor<T>, Option<KeptMask>) {
    match x.device() {
        Device::Cpu => {
            let mut values = crate::pool::take(x.numel());
            cpu::masked_fill(
                x.data(),
                mask.data(),
                T::from_f64(value),
                out,
                strides,
                &mut values,
            );
            (Tensor::from_vec(values, out), None)
        }
        Device::Cuda(_) => on_cuda!({
            let (y, m) = crate::cuda::mask::masked_fill(x, mask, value, out, strides);
            (y, Some(Kept::Cuda(m)))
        }),
    }
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
        let same_shape = self.mask.shape() == &self.out[..];
        let (out, strides) = (&self.out, &self.strides);
        cpu::dropout_backward(g, self.mask.data(), same_shape, out, strides, dst, acc);
    }

    cuda_vjp!(|op, _k, g, dst, acc| {
        let (out, strides) = (&op.out, &op.strides);
        crate::cuda::mask::dropout_backward(g, &op.mask, out, strides, dst, acc)
    });
}

/// The dropout kernel on the operands' device: `x ⊙ mask`.
fn dropout<T: Float>(
    x: &Tensor<T>,
    mask: &Tensor<T>,
    out: &[usize],
    strides: &[usize],
) -> Tensor<T> {
    match common_device("dropout", &[x, mask]) {
        Device::Cpu => {
            let mut values = crate::pool::take(x.numel());
            let same_shape = mask.shape() == x.shape();
            cpu::dropout(x.data(), mask.data(), same_shape, out, strides, &mut values);
            Tensor::from_vec(values, out)
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::mask::dropout(x, mask, out, strides)),
    }
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
        let (value, kept) = masked_fill(self.value(), mask, value, &out, &strides);
        record(value, &[self], move || MaskedFillBackward {
            mask: kept.unwrap_or_else(|| Kept::Host(mask.data().iter().map(|&b| !b).collect())),
            out,
            strides,
        })
    }

    /// Multiplies by a dropout mask (see [`dropout_mask`]) broadcast to this shape; for
    /// variational dropout draw the mask with size 1 on the time axis.
    pub fn dropout(&self, mask: &Tensor<T>) -> Var<T> {
        let out = Shape::from_slice(self.shape());
        let strides = mask_strides("dropout", mask.shape(), &out);
        let value = dropout(self.value(), mask, &out, &strides);
        record(value, &[self], || DropoutBackward {
            mask: mask.clone(),
            out,
            strides,
        })
    }
}
