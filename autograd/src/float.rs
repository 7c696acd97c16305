//! The scalar types tensors hold: `f32` for training, `f64` for gradient checks.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// Which scalar type a tensor holds (for checkpoints and error messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
}

impl Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        })
    }
}

/// A real floating-point scalar: `f32` or `f64`.
///
/// Every op, solver and model is written once against this trait, so the same cell runs in
/// `f32` for speed and in `f64` for finite-difference gradient checks. The `faer::traits::RealField`
/// bound lets matrix products go straight to faer's kernels.
pub trait Float:
    faer::traits::RealField
    + crate::device::DeviceScalar
    + crate::pool::Pooled
    + Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Debug
    + Display
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Machine epsilon.
    const EPSILON: Self;
    /// Positive infinity.
    const INFINITY: Self;
    /// Converts from `f64` (rounding for `f32`).
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Converts a count or index.
    fn from_usize(v: usize) -> Self {
        Self::from_f64(v as f64)
    }
    /// e^self.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Integer power.
    fn powi(self, n: i32) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Larger of two values (NaN-propagating is not guaranteed).
    fn max(self, other: Self) -> Self;
    /// Smaller of two values.
    fn min(self, other: Self) -> Self;
    /// True unless NaN or infinite.
    fn is_finite(self) -> bool;
    /// `e^self` for bulk kernels: exact (`std`) for f64, a branch-free polynomial for f32
    /// (relative error below 3e-7 on the whole range) that the compiler vectorises.
    fn exp_fast(self) -> Self {
        self.exp()
    }
    /// `tanh(self)` for bulk kernels: `std` for f64, built on [`Float::exp_fast`] for f32
    /// (relative error below 1e-6).
    fn tanh_fast(self) -> Self {
        self.tanh()
    }
}

macro_rules! impl_float {
    ($t:ty, $tag:expr $(, $fast:item)*) => {
        impl Float for $t {
            const DTYPE: DType = $tag;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const EPSILON: Self = <$t>::EPSILON;
            const INFINITY: Self = <$t>::INFINITY;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn powi(self, n: i32) -> Self {
                <$t>::powi(self, n)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            $($fast)*
        }
    };
}

impl_float!(
    f32,
    DType::F32,
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    },
    #[inline(always)]
    fn tanh_fast(self) -> Self {
        tanh_f32(self)
    }
);
impl_float!(f64, DType::F64);

/// `e^x` in f32 without branches: `x = n·ln2 + r` with `|r| ≤ ln2/2`, a degree-6 Taylor
/// polynomial for `e^r` (truncation below 2e-8), and `2^n` assembled in the exponent bits.
/// Inputs are clamped to `[-87.3, 88.7]` (results stay normal and finite); NaN propagates.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting rounds to an integer
    let xc = x.clamp(-87.3, 88.7);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let y = p * scale;
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// `tanh(x)` in f32: an odd Taylor polynomial below 0.3, `1 − 2/(e^{2|x|} + 1)` above,
/// selected without branches.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let x2 = x * x;
    let small = x
        * (1.0
            + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
    let e = exp_f32(2.0 * a);
    let large = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if a < 0.3 {
        small
    } else {
        large
    }
}
