//! CPU loops of the element-wise functions ([`crate::ops::unary`]): one monomorphised loop per
//! function (the function is a literal inside each loop's closure, so it is folded even where
//! rayon runs the closure), parallel above [`PAR_MIN`](crate::kernels::PAR_MIN) elements
//! through [`crate::kernels`].

use crate::float::Float;
use crate::kernels;
use crate::ops::unary::Kind;

/// Expands `$go!(Kind::…)` for the variant of `$kind`.
macro_rules! each_kind {
    ($kind:expr, $go:ident) => {
        match $kind {
            Kind::Neg => $go!(Kind::Neg),
            Kind::Exp => $go!(Kind::Exp),
            Kind::Log => $go!(Kind::Log),
            Kind::Tanh => $go!(Kind::Tanh),
            Kind::Sigmoid => $go!(Kind::Sigmoid),
            Kind::Relu => $go!(Kind::Relu),
            Kind::Gelu => $go!(Kind::Gelu),
            Kind::Sqrt => $go!(Kind::Sqrt),
            Kind::Powi(n) => $go!(Kind::Powi(n)),
        }
    };
}

/// `out = f(x)`.
pub(crate) fn forward<T: Float>(kind: Kind, x: &[T], out: &mut [T]) {
    macro_rules! go {
        ($k:expr) => {
            kernels::map_into(out, x, move |x| $k.apply(x), false)
        };
    }
    each_kind!(kind, go)
}

/// `dst (+)= g · f'(x)`. A value the derivative does not read (see [`Kind::reads`]) may be
/// `None`; it is stood in for by one that is there (and never read).
pub(crate) fn backward<T: Float>(
    kind: Kind,
    g: &[T],
    x: Option<&[T]>,
    y: Option<&[T]>,
    dst: &mut [T],
    acc: bool,
) {
    let xs = x.or(y).unwrap_or(g);
    let ys = y.or(x).unwrap_or(g);
    macro_rules! go {
        ($k:expr) => {
            kernels::zip3_into(dst, g, xs, ys, |g, x, y| $k.derivative(g, x, y), acc)
        };
    }
    each_kind!(kind, go)
}

/// [`backward`] over the cotangent's own buffer (`g` becomes `g · f'(x)`).
pub(crate) fn backward_in_place<T: Float>(
    kind: Kind,
    g: &mut [T],
    x: Option<&[T]>,
    y: Option<&[T]>,
) {
    let (xs, ys) = (x.or(y), y.or(x));
    macro_rules! go {
        ($k:expr) => {
            match (xs, ys) {
                (Some(x), Some(y)) => {
                    kernels::zip_into_self3(g, x, y, |g, x, y| $k.derivative(g, x, y))
                }
                _ => kernels::map_self(g, |g| $k.derivative(g, g, g)),
            }
        };
    }
    each_kind!(kind, go)
}
