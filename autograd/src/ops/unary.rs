//! Element-wise functions of one tensor and their derivatives.

#[cfg(feature = "cuda")]
use crate::device::buf;
use crate::float::{self, Float};
use crate::kernels;
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

#[derive(Clone, Copy, Debug)]
enum Kind {
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
    fn apply<T: Float>(self, x: T) -> T {
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

    #[cfg(feature = "cuda")]
    fn gpu(self) -> deq_cuda::ops::elementwise::UnaryKind {
        use deq_cuda::ops::elementwise::UnaryKind as G;
        match self {
            Kind::Neg => G::Neg,
            Kind::Exp => G::Exp,
            Kind::Log => G::Log,
            Kind::Tanh => G::Tanh,
            Kind::Sigmoid => G::Sigmoid,
            Kind::Relu => G::Relu,
            Kind::Gelu => G::Gelu,
            Kind::Sqrt => G::Sqrt,
            Kind::Powi(n) => G::Powi(n),
        }
    }

    /// Which values [`Kind::derivative`] reads: `(input, output)`. A recording keeps only
    /// those (relu keeps its output, not the pre-activation; neg keeps nothing).
    fn reads(self) -> (bool, bool) {
        match self {
            Kind::Neg => (false, false),
            Kind::Exp | Kind::Tanh | Kind::Sigmoid | Kind::Relu | Kind::Sqrt => (false, true),
            Kind::Log | Kind::Gelu | Kind::Powi(_) => (true, false),
        }
    }

    /// g · f'(x), given the input `x` and the output `y = f(x)` (only those of
    /// [`Kind::reads`] are meaningful).
    #[inline(always)]
    fn derivative<T: Float>(self, g: T, x: T, y: T) -> T {
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
    /// The input, when the derivative reads it (always on a GPU).
    x: Option<Tensor<T>>,
    /// The output, when the derivative reads it (always on a GPU).
    y: Option<Tensor<T>>,
}

impl<T: Float> Backward<T> for UnaryBackward<T> {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        // A value the derivative does not read is stood in for by one it has (never read).
        let x = self.x.as_ref().or(self.y.as_ref()).map_or(g, |t| t.data());
        let y = self.y.as_ref().or(self.x.as_ref()).map_or(g, |t| t.data());
        macro_rules! go {
            ($kind:expr) => {
                kernels::zip3_into(dst, g, x, y, |g, x, y| $kind.derivative(g, x, y), acc)
            };
        }
        match self.kind {
            Kind::Neg => go!(Kind::Neg),
            Kind::Exp => go!(Kind::Exp),
            Kind::Log => go!(Kind::Log),
            Kind::Tanh => go!(Kind::Tanh),
            Kind::Sigmoid => go!(Kind::Sigmoid),
            Kind::Relu => go!(Kind::Relu),
            Kind::Gelu => go!(Kind::Gelu),
            Kind::Sqrt => go!(Kind::Sqrt),
            Kind::Powi(n) => go!(Kind::Powi(n)),
        }
    }

    fn vjp_in_place(&self, _k: usize, g: &mut [T]) -> bool {
        let x = self.x.as_ref().or(self.y.as_ref()).map(|t| t.data());
        let y = self.y.as_ref().or(self.x.as_ref()).map(|t| t.data());
        macro_rules! go {
            ($kind:expr) => {
                match (x, y) {
                    (Some(x), Some(y)) => {
                        kernels::zip_into_self3(g, x, y, |g, x, y| $kind.derivative(g, x, y))
                    }
                    _ => kernels::map_self(g, |g| $kind.derivative(g, g, g)),
                }
            };
        }
        match self.kind {
            Kind::Neg => go!(Kind::Neg),
            Kind::Exp => go!(Kind::Exp),
            Kind::Log => go!(Kind::Log),
            Kind::Tanh => go!(Kind::Tanh),
            Kind::Sigmoid => go!(Kind::Sigmoid),
            Kind::Relu => go!(Kind::Relu),
            Kind::Gelu => go!(Kind::Gelu),
            Kind::Sqrt => go!(Kind::Sqrt),
            Kind::Powi(n) => go!(Kind::Powi(n)),
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
        let expect = "unary: a gpu recording keeps x and y";
        let x = buf("unary", self.x.as_ref().expect(expect));
        let y = buf("unary", self.y.as_ref().expect(expect));
        deq_cuda::ops::elementwise::unary_backward(self.kind.gpu(), g, x, y, dst, acc);
    }
}

fn unary<T: Float>(kind: Kind, a: &Var<T>) -> Var<T> {
    let v = a.value();
    #[cfg(feature = "cuda")]
    if let Some(x) = v.gpu() {
        let y = deq_cuda::ops::elementwise::unary(kind.gpu(), x);
        let value = Tensor::from_gpu(y, v.shape());
        let (x, y) = (Some(v.clone()), Some(value.clone()));
        return record(value, &[a], move || UnaryBackward { kind, x, y });
    }
    let value = match kind {
        Kind::Neg => v.map(|x| Kind::Neg.apply(x)),
        Kind::Exp => v.map(|x| Kind::Exp.apply(x)),
        Kind::Log => v.map(|x| Kind::Log.apply(x)),
        Kind::Tanh => v.map(|x| Kind::Tanh.apply(x)),
        Kind::Sigmoid => v.map(|x| Kind::Sigmoid.apply(x)),
        Kind::Relu => v.map(|x| Kind::Relu.apply(x)),
        Kind::Gelu => v.map(|x| Kind::Gelu.apply(x)),
        Kind::Sqrt => v.map(|x| Kind::Sqrt.apply(x)),
        Kind::Powi(n) => v.map(move |x| Kind::Powi(n).apply(x)),
    };
    let (reads_x, reads_y) = kind.reads();
    let x = reads_x.then(|| a.value().clone());
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
