//! Element-wise functions of one tensor and their derivatives.
//!
//! A recording keeps the input, the output, or neither, whichever the derivative reads (relu
//! keeps its output, log its input, neg nothing). The loops are in `crate::cpu::unary` and
//! `crate::cuda::unary`.

use crate::cpu::unary as cpu;
use crate::device::{cuda_vjp, on_cuda, Device};
use crate::float::{self, Float};
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

/// The functions, with their values and derivatives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Neg,
    Exp,
    Log,
    Tanh,
    Sigmoid,
    Relu,
    Gelu,
    Sqrt,
    Powi(i32),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Neg => "neg",
            Kind::Exp => "exp",
            Kind::Log => "log",
            Kind::Tanh => "tanh",
            Kind::Sigmoid => "sigmoid",
            Kind::Relu => "relu",
            Kind::Gelu => "gelu",
            Kind::Sqrt => "sqrt",
            Kind::Powi(_) => "powi",
        }
    }

    #[inline(always)]
    pub(crate) fn apply<T: Float>(self, x: T) -> T {
        match self {
            Kind::Neg => -x,
            Kind::Exp => x.exp_fast(),
            Kind::Log => x.ln(),
            Kind::Tanh => x.tanh_fast(),
            Kind::Sigmoid => float::sigmoid(x),
            Kind::Relu => x.max(T::ZERO),
            Kind::Gelu => float::gelu(x),
            Kind::Sqrt => x.sqrt(),
            Kind::Powi(n) => x.powi(n),
        }
    }

    /// Which values [`Kind::derivative`] reads: `(input, output)`. A recording keeps only
    /// those (relu keeps its output, not the pre-activation; neg keeps nothing).
    pub(crate) fn reads(self) -> (bool, bool) {
        match self {
            Kind::Neg => (false, false),
            Kind::Exp | Kind::Tanh | Kind::Sigmoid | Kind::Relu | Kind::Sqrt => (false, true),
            Kind::Log | Kind::Gelu | Kind::Powi(_) => (true, false),
        }
    }

    /// g · f'(x), given the input `x` and the output `y = f(x)` (only those of
    /// [`Kind::reads`] are meaningful).
    #[inline(always)]
    pub(crate) fn derivative<T: Float>(self, g: T, x: T, y: T) -> T {
        match self {
            Kind::Neg => -g,
            Kind::Exp => g * y,
            Kind::Log => g / x,
            Kind::Tanh => g * (T::ONE - y * y),
            Kind::Sigmoid => g * y * (T::ONE - y),
            // From the output: y > 0 exactly when x > 0.
            Kind::Relu => {
                if y > T::ZERO {
                    g
                } else {
                    T::ZERO
                }
            }
            Kind::Gelu => g * float::gelu_derivative(x),
            Kind::Sqrt => g * T::from_f64(0.5) / y,
            Kind::Powi(n) => g * T::from_f64(n as f64) * x.powi(n - 1),
        }
    }
}

struct UnaryBackward<T: Float> {
    kind: Kind,
    /// The input, when the derivative reads it (always on a GPU, whose kernel takes both).
    x: Option<Tensor<T>>,
    /// The output, when the derivative reads it (always on a GPU).
    y: Option<Tensor<T>>,
}

impl<T: Float> Backward<T> for UnaryBackward<T> {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let (x, y) = (self.x.as_ref(), self.y.as_ref());
        cpu::backward(
            self.kind,
            g,
            x.map(Tensor::data),
            y.map(Tensor::data),
            dst,
            acc,
        );
    }

    fn vjp_in_place(&self, _k: usize, g: &mut [T]) -> bool {
        let (x, y) = (self.x.as_ref(), self.y.as_ref());
        cpu::backward_in_place(self.kind, g, x.map(Tensor::data), y.map(Tensor::data));
        true
    }

    cuda_vjp!(|op, _k, g, dst, acc| {
        let expect = "unary: a gpu recording keeps x and y";
        let (x, y) = (op.x.as_ref().expect(expect), op.y.as_ref().expect(expect));
        crate::cuda::unary::backward(op.kind, g, x, y, dst, acc)
    });
}

/// The forward kernel on `x`'s device.
fn forward<T: Float>(kind: Kind, x: &Tensor<T>) -> Tensor<T> {
    match x.device() {
        Device::Cpu => {
            let mut out = crate::pool::take(x.numel());
            cpu::forward(kind, x.data(), &mut out);
            Tensor::from_vec(out, x.shape())
        }
        Device::Cuda(_) => on_cuda!(crate::cuda::unary::forward(kind, x)),
    }
}

fn unary<T: Float>(kind: Kind, a: &Var<T>) -> Var<T> {
    let v = a.value();
    let value = forward(kind, v);
    // A host recording keeps only what the derivative reads; the device kernel reads both.
    let (reads_x, reads_y) = match v.device() {
        Device::Cpu => kind.reads(),
        Device::Cuda(_) => (true, true),
    };
    let x = reads_x.then(|| v.clone());
    let y = reads_y.then(|| value.clone());
    record(value, &[a], move || UnaryBackward { kind, x, y })
}

impl<T: Float> Var<T> {
    /// `-self`.
    pub fn neg(&self) -> Var<T> {
        unary(Kind::Neg, self)
    }

    /// `e^self`.
    pub fn exp(&self) -> Var<T> {
        unary(Kind::Exp, self)
    }

    /// Natural logarithm.
    pub fn log(&self) -> Var<T> {
        unary(Kind::Log, self)
    }

    /// Hyperbolic tangent; derivative `1 - tanh²`.
    pub fn tanh(&self) -> Var<T> {
        unary(Kind::Tanh, self)
    }

    /// Logistic sigmoid `1 / (1 + e^-x)`, computed without overflow and with the relative
    /// accuracy of small results kept ([`float::sigmoid`]).
    pub fn sigmoid(&self) -> Var<T> {
        unary(Kind::Sigmoid, self)
    }

    /// `max(x, 0)`; derivative 0 at 0.
    pub fn relu(&self) -> Var<T> {
        unary(Kind::Relu, self)
    }

    /// GELU in its tanh form, `x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³)))` (as in GPT-2 and the
    /// `approximate="tanh"` option of PyTorch), evaluated as `x·σ(2√(2/π)(x + 0.044715 x³))`
    /// so that negative inputs keep their relative accuracy ([`float::gelu`]); the derivative
    /// is exact for this form.
    pub fn gelu(&self) -> Var<T> {
        unary(Kind::Gelu, self)
    }

    /// Square root.
    pub fn sqrt(&self) -> Var<T> {
        unary(Kind::Sqrt, self)
    }

    /// Integer power `x^n`.
    pub fn powi(&self, n: i32) -> Var<T> {
        unary(Kind::Powi(n), self)
    }
}
