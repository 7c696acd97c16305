//! Element-wise arithmetic with broadcasting (`+ - × ÷`) and scalar shifts and scales.

use super::broadcast::{broadcast_shape, broadcast_strides, walk2};
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
    a: Tensor<T>,
    b: Tensor<T>,
    out: Shape,
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
        let sa = broadcast_strides(self.a.shape(), &self.out);
        let sb = broadcast_strides(self.b.shape(), &self.out);
        let (av, bv) = (a, b);
        walk2(&self.out, &sa, &sb, |i, ia, ib| {
            let d = kind.partial(k, g[i], av[ia], bv[ib]);
            dst[if k == 0 { ia } else { ib }] += d;
        });
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
        let a = (buf(name, &self.a), self.a.shape());
        let b = (buf(name, &self.b), self.b.shape());
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
            a: av.clone(),
            b: bv.clone(),
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
    record(value, &[a, b], || BinaryBackward {
        kind,
        a: av.clone(),
        b: bv.clone(),
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
        if self.scale == 1.0 {
            kernels::write(dst, g, acc);
        } else {
            let s = T::from_f64(self.scale);
            kernels::map_into(dst, g, |g| g * s, acc);
        }
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
