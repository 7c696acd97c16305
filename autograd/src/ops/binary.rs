//! Element-wise arithmetic with broadcasting (`+ - × ÷`) and scalar shifts and scales.

use super::broadcast::{broadcast_shape, broadcast_strides, walk1, walk2};
#[cfg(feature = "cuda")]
use crate::device::{buf, common_device, Device};
use crate::float::Float;
use crate::kernels;
use crate::tape::Backward;
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Add,
    Sub,
    Mul,
    Div,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Add => "add",
            Kind::Sub => "sub",
            Kind::Mul => "mul",
            Kind::Div => "div",
        }
    }

    #[cfg(feature = "cuda")]
    fn gpu(self) -> deq_cuda::ops::broadcast::BinaryKind {
        use deq_cuda::ops::broadcast::BinaryKind as G;
        match self {
            Kind::Add => G::Add,
            Kind::Sub => G::Sub,
            Kind::Mul => G::Mul,
            Kind::Div => G::Div,
        }
    }

    #[inline(always)]
    fn apply<T: Float>(self, a: T, b: T) -> T {
        match self {
            Kind::Add => a + b,
            Kind::Sub => a - b,
            Kind::Mul => a * b,
            Kind::Div => a / b,
        }
    }

    /// ∂(a op b)/∂a · g (k = 0) or ∂/∂b · g (k = 1).
    #[inline(always)]
    fn partial<T: Float>(self, k: usize, g: T, a: T, b: T) -> T {
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

    /// The values; an unkept operand is never read, so it stands in as an empty slice.
    fn data(&self) -> &[T] {
        match self {
            Operand::Kept(t) => t.data(),
            Operand::Shape(_) => &[],
        }
    }

    #[cfg(feature = "cuda")]
    fn tensor(&self) -> &Tensor<T> {
        match self {
            Operand::Kept(t) => t,
            Operand::Shape(_) => unreachable!("gpu recordings keep their operands"),
        }
    }
}

impl<T: Float> Backward<T> for BinaryBackward<T> {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let kind = self.kind;
        let (a, b) = (self.a.data(), self.b.data());
        let target = if k == 0 { &self.a } else { &self.b };
        if target.shape() == &self.out[..] && self.a.shape() == self.b.shape() {
            match kind {
                Kind::Add => kernels::write(dst, g, acc),
                Kind::Sub if k == 0 => kernels::write(dst, g, acc),
                Kind::Sub => kernels::map_into(dst, g, |g| -g, acc),
                Kind::Mul if k == 0 => kernels::zip_into(dst, g, b, |g, b| g * b, acc),
                Kind::Mul => kernels::zip_into(dst, g, a, |g, a| g * a, acc),
                Kind::Div if k == 0 => kernels::zip_into(dst, g, b, |g, b| g / b, acc),
                Kind::Div => kernels::zip3_into(dst, g, a, b, |g, a, b| -g * a / (b * b), acc),
            }
            return;
        }
        kernels::prepare(dst, acc);
        if matches!(kind, Kind::Add | Kind::Sub) {
            // ±g summed over the broadcast axes; the operands are not kept, nor read.
            let sign = if kind == Kind::Sub && k == 1 {
                -T::ONE
            } else {
                T::ONE
            };
            reduce_broadcast(g, target.shape(), &self.out, sign, dst);
            return;
        }
        let sa = broadcast_strides(self.a.shape(), &self.out);
        let sb = broadcast_strides(self.b.shape(), &self.out);
        let (av, bv) = (a, b);
        walk2(&self.out, &sa, &sb, |i, ia, ib| {
            let d = kind.partial(k, g[i], av[ia], bv[ib]);
            dst[if k == 0 { ia } else { ib }] += d;
        });
    }

    fn vjp_in_place(&self, k: usize, g: &mut [T]) -> bool {
        let target = if k == 0 { &self.a } else { &self.b };
        if target.shape() != &self.out[..] || self.a.shape() != self.b.shape() {
            return false;
        }
        match (self.kind, k) {
            (Kind::Add, _) | (Kind::Sub, 0) => {}
            (Kind::Sub, _) => kernels::map_self(g, |g| -g),
            (Kind::Mul, 0) => kernels::zip_into_self(g, self.b.data(), |g, b| g * b),
            (Kind::Mul, _) => kernels::zip_into_self(g, self.a.data(), |g, a| g * a),
            (Kind::Div, 0) => kernels::zip_into_self(g, self.b.data(), |g, b| g / b),
            (Kind::Div, _) => return false,
        }
        true
    }

    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        let name = self.kind.name();
        let a = (buf(name, self.a.tensor()), self.a.shape());
        let b = (buf(name, self.b.tensor()), self.b.shape());
        deq_cuda::ops::broadcast::binary_backward(self.kind.gpu(), k, g, a, b, &self.out, dst, acc);
    }
}

fn binary<T: Float>(kind: Kind, a: &Var<T>, b: &Var<T>) -> Var<T> {
    let (av, bv) = (a.value(), b.value());
    let out_shape = broadcast_shape(kind.name(), av.shape(), bv.shape());
    #[cfg(feature = "cuda")]
    if common_device(kind.name(), &[av, bv]) != Device::Cpu {
        let (name, a_shape, b_shape) = (kind.name(), av.shape(), bv.shape());
        let out = deq_cuda::ops::broadcast::binary(
            kind.gpu(),
            buf(name, av),
            a_shape,
            buf(name, bv),
            b_shape,
            &out_shape,
        );
        let value = Tensor::from_gpu(out, &out_shape);
        return record(value, &[a, b], || BinaryBackward {
            kind,
            a: Operand::new(av, true),
            b: Operand::new(bv, true),
            out: out_shape.clone(),
        });
    }
    let numel: usize = out_shape.iter().product();
    let mut out = crate::pool::take(numel);
    if av.shape() == bv.shape() {
        kernels::zip_into(
            &mut out,
            av.data(),
            bv.data(),
            |x, y| kind.apply(x, y),
            false,
        );
    } else {
        let sa = broadcast_strides(av.shape(), &out_shape);
        let sb = broadcast_strides(bv.shape(), &out_shape);
        let (ad, bd) = (av.data(), bv.data());
        walk2(&out_shape, &sa, &sb, |i, ia, ib| {
            out[i] = kind.apply(ad[ia], bd[ib])
        });
    }
    let value = Tensor::from_vec(out, &out_shape);
    let keep = matches!(kind, Kind::Mul | Kind::Div);
    record(value, &[a, b], || BinaryBackward {
        kind,
        a: Operand::new(av, keep),
        b: Operand::new(bv, keep),
        out: out_shape.clone(),
    })
}

/// `dst += sign · g` summed over the axes along which `target` was broadcast to `out`. A
/// target that is a trailing block of `out` (a bias `[d]` over `[B, T, d]`) is a sum of
/// contiguous rows; anything else walks the broadcast strides.
fn reduce_broadcast<T: Float>(g: &[T], target: &[usize], out: &[usize], sign: T, dst: &mut [T]) {
    let n: usize = target.iter().product();
    let lead = out.len() - target.len();
    let trailing = target.iter().zip(&out[lead..]).all(|(a, b)| a == b);
    if trailing && n > 0 {
        for row in g.chunks_exact(n) {
            dst.iter_mut().zip(row).for_each(|(d, &v)| *d += sign * v);
        }
        return;
    }
    let st = broadcast_strides(target, out);
    walk1(out, &st, |i, it| dst[it] += sign * g[i]);
}

struct ScalarBackward {
    scale: f64,
}

impl<T: Float> Backward<T> for ScalarBackward {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        if self.scale == 1.0 {
            kernels::write(dst, g, acc);
        } else {
            let s = T::from_f64(self.scale);
            kernels::map_into(dst, g, |g| g * s, acc);
        }
    }

    fn vjp_in_place(&self, _k: usize, g: &mut [T]) -> bool {
        if self.scale != 1.0 {
            let s = T::from_f64(self.scale);
            kernels::map_self(g, |g| g * s);
        }
        true
    }

    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        _k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        deq_cuda::ops::elementwise::scale_into(g, self.scale, dst, acc);
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
        #[cfg(feature = "cuda")]
        if let Some(x) = self.value().gpu() {
            let y = deq_cuda::ops::elementwise::affine(x, scale, shift);
            let value = Tensor::from_gpu(y, self.shape());
            return record(value, &[self], || ScalarBackward { scale });
        }
        let (s, c) = (T::from_f64(scale), T::from_f64(shift));
        let value = self.value().map(move |x| x * s + c);
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
