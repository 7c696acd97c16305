//! Element-wise arithmetic with broadcasting (`+ - × ÷`) and scalar shifts and scales.
//!
//! `y = a op b` with NumPy broadcasting; the VJP of input `k` is `∂(a op b)/∂(input k) · g`
//! (`Kind`'s partial derivatives) summed over the axes that input was broadcast along. The
//! loops are in `crate::cpu::binary` and `crate::cuda::binary`.

use super::broadcast::broadcast_shape;
use crate::cpu::binary as cpu;
use crate::device::{common_device, cuda_vjp, on_cuda, Device};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

/// The four operations, with their values and partial derivatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Add,
    Sub,
    Mul,
    Div,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Add => "add",
            Kind::Sub => "sub",
            Kind::Mul => "mul",
            Kind::Div => "div",
        }
    }

    #[inline(always)]
    pub(crate) fn apply<T: Float>(self, a: T, b: T) -> T {
        match self {
            Kind::Add => a + b,
            Kind::Sub => a - b,
            Kind::Mul => a * b,
            Kind::Div => a / b,
        }
    }

    /// ∂(a op b)/∂a · g (k = 0) or ∂/∂b · g (k = 1).
    #[inline(always)]
    pub(crate) fn partial<T: Float>(self, k: usize, g: T, a: T, b: T) -> T {
        match (self, k) {
            (Kind::Add, _) => g,
            (Kind::Sub, 0) => g,
            (Kind::Sub, _) => -g,
            (Kind::Mul, 0) => g * b,
            (Kind::Mul, _) => g * a,
            (Kind::Div, 0) => g / b,
            (Kind::Div, _) => -g * a / (b * b),
        }
    }
}

struct BinaryBackward<T: Float> {
    kind: Kind,
    /// The operands, kept only when the derivative reads them (`mul`, `div`; always on a
    /// GPU); `add` and `sub` keep their shapes alone.
    a: Operand<T>,
    b: Operand<T>,
    out: Shape,
}

/// A recorded operand: its values, or only its shape when the VJP does not read them.
enum Operand<T: Float> {
    Kept(Tensor<T>),
    Shape(Shape),
}

impl<T: Float> Operand<T> {
    fn new(t: &Tensor<T>, keep: bool) -> Self {
        if keep {
            Operand::Kept(t.clone())
        } else {
            Operand::Shape(Shape::from_slice(t.shape()))
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Operand::Kept(t) => t.shape(),
            Operand::Shape(s) => s,
        }
    }

    fn kept(&self) -> Option<&Tensor<T>> {
        match self {
            Operand::Kept(t) => Some(t),
            Operand::Shape(_) => None,
        }
    }

    /// The values; an unkept operand is never read, so it stands in as an empty slice.
    fn data(&self) -> &[T] {
        self.kept().map_or(&[], Tensor::data)
    }
}

impl<T: Float> BinaryBackward<T> {
    /// Input `k` and the other operand have the output's shape: no broadcast to undo.
    fn same_shape(&self, k: usize) -> bool {
        let target = if k == 0 { &self.a } else { &self.b };
        target.shape() == &self.out[..] && self.a.shape() == self.b.shape()
    }
}

impl<T: Float> Backward<T> for BinaryBackward<T> {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let (a, b) = (self.a.data(), self.b.data());
        if self.same_shape(k) {
            cpu::backward_same_shape(self.kind, k, g, (a, b), dst, acc);
        } else {
            let (a, b) = ((a, self.a.shape()), (b, self.b.shape()));
            cpu::backward_broadcast(self.kind, k, g, a, b, &self.out, dst, acc);
        }
    }

    fn vjp_in_place(&self, k: usize, g: &mut [T]) -> bool {
        let operands = (self.a.data(), self.b.data());
        self.same_shape(k) && cpu::backward_same_shape_in_place(self.kind, k, g, operands)
    }

    cuda_vjp!(|op, k, g, dst, acc| {
        let expect = "gpu recordings keep their operands";
        let (a, b) = (op.a.kept().expect(expect), op.b.kept().expect(expect));
        crate::cuda::binary::backward(op.kind, k, g, a, b, &op.out, dst, acc);
    });
}

/// The forward kernel on the operands' device.
fn forward<T: Float>(kind: Kind, a: &Tensor<T>, b: &Tensor<T>, out_shape: &[usize]) -> Tensor<T> {
    match common_device(kind.name(), &[a, b]) {
        Device::Cpu => {
            let mut out = crate::pool::take(out_shape.iter().product());
            cpu::forward(
                kind,
                (a.data(), a.shape()),
                (b.data(), b.shape()),
                out_shape,
                &mut out,
            );
            Tensor::from_vec(out, out_shape)
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::binary::forward(kind, a, b, out_shape)),
    }
}

fn binary<T: Float>(kind: Kind, a: &Var<T>, b: &Var<T>) -> Var<T> {
    let (av, bv) = (a.value(), b.value());
    let out_shape = broadcast_shape(kind.name(), av.shape(), bv.shape());
    let value = forward(kind, av, bv, &out_shape);
    // The device kernel reads both operands; on the host only `mul` and `div` read them.
    let keep = value.device() != Device::Cpu || matches!(kind, Kind::Mul | Kind::Div);
    record(value, &[a, b], || BinaryBackward {
        kind,
        a: Operand::new(av, keep),
        b: Operand::new(bv, keep),
        out: out_shape.clone(),
    })
}

struct ScalarBackward {
    scale: f64,
}

impl<T: Float> Backward<T> for ScalarBackward {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        cpu::scale(g, self.scale, dst, acc);
    }

    fn vjp_in_place(&self, _k: usize, g: &mut [T]) -> bool {
        cpu::scale_in_place(g, self.scale);
        true
    }

    cuda_vjp!(|op, _k, g, dst, acc| crate::cuda::binary::scale(g, op.scale, dst, acc));
}

/// `scale · x + shift` on `x`'s device.
fn affine<T: Float>(x: &Tensor<T>, scale: f64, shift: f64) -> Tensor<T> {
    match x.device() {
        Device::Cpu => {
            let mut out = crate::pool::take(x.numel());
            cpu::affine(x.data(), scale, shift, &mut out);
            Tensor::from_vec(out, x.shape())
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::binary::affine(x, scale, shift)),
    }
}

impl<T: Float> Var<T> {
    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Var<T>) -> Var<T> {
        binary(Kind::Add, self, other)
    }

    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Var<T>) -> Var<T> {
        binary(Kind::Sub, self, other)
    }

    /// `self · other` element-wise, broadcasting.
    pub fn mul(&self, other: &Var<T>) -> Var<T> {
        binary(Kind::Mul, self, other)
    }

    /// `self / other` element-wise, broadcasting.
    pub fn div(&self, other: &Var<T>) -> Var<T> {
        binary(Kind::Div, self, other)
    }

    /// `self · scale + shift` with constant scalars.
    pub fn affine(&self, scale: f64, shift: f64) -> Var<T> {
        let value = affine(self.value(), scale, shift);
        record(value, &[self], || ScalarBackward { scale })
    }

    /// `self + c`.
    pub fn add_scalar(&self, c: f64) -> Var<T> {
        self.affine(1.0, c)
    }

    /// `self · c`.
    pub fn mul_scalar(&self, c: f64) -> Var<T> {
        self.affine(c, 0.0)
    }
}

macro_rules! impl_operator {
    ($trait:ident, $method:ident, $fun:ident) => {
        impl<T: Float> std::ops::$trait<&Var<T>> for &Var<T> {
            type Output = Var<T>;
            fn $method(self, rhs: &Var<T>) -> Var<T> {
                self.$fun(rhs)
            }
        }
        impl<T: Float> std::ops::$trait<Var<T>> for Var<T> {
            type Output = Var<T>;
            fn $method(self, rhs: Var<T>) -> Var<T> {
                (&self).$fun(&rhs)
            }
        }
        impl<T: Float> std::ops::$trait<&Var<T>> for Var<T> {
            type Output = Var<T>;
            fn $method(self, rhs: &Var<T>) -> Var<T> {
                (&self).$fun(rhs)
            }
        }
    };
}

impl_operator!(Add, add, add);
impl_operator!(Sub, sub, sub);
impl_operator!(Mul, mul, mul);
impl_operator!(Div, div, div);

impl<T: Float> std::ops::Neg for &Var<T> {
    type Output = Var<T>;
    fn neg(self) -> Var<T> {
        self.neg()
    }
}
