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
    /// `e^self` for bulk kernels: `std` for f64, [`exp_f32`] for f32 (branch-free, so slice
    /// loops vectorise; relative error below [`EXP_F32_REL_ERROR`], and right at ±inf, NaN,
    /// the overflow edge and subnormal results).
    fn exp_fast(self) -> Self {
        self.exp()
    }
    /// `tanh(self)` for bulk kernels: `std` for f64, [`tanh_f32`] for f32 (branch-free;
    /// relative error below [`TANH_F32_REL_ERROR`]).
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

/// `a·b + c`: one fused multiply-add (one rounding) where the build targets FMA (the
/// x86-64-v3 default that `.cargo/config.toml` sets for Linux x86-64, and AArch64), two
/// operations elsewhere, so that a build for older CPUs never calls the software `fmaf`.
/// [`exp_f32`]'s reduction and polynomial use it: each degree is one instruction instead of
/// two.
#[inline(always)]
pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(any(target_feature = "fma", target_arch = "aarch64")) {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x` in f32 without branches, right over the whole f32 range.
///
/// `x = n·ln 2 + r` with `n = round(x·log₂e)` and `|r| ≤ ln2/2` (Cody–Waite: `ln 2` split in
/// two parts, the first with 9 trailing zero bits so that `n·LN2_HI` is exact), `e^r` by its
/// degree-7 Taylor polynomial (truncation below 1.1e-8 relative; Horner's rule in `fma`s),
/// and `2^n` applied as two factors `2^⌊n/2⌋ · 2^(n−⌊n/2⌋)`, each a normal float: a result in the subnormal range is
/// rounded once, and a result above `f32::MAX` overflows to `+inf` as `f32::exp` does. The
/// input is clamped to `[-104, 89]` first (`e^-104 < 2^-150` rounds to 0 and `e^89` overflows),
/// which keeps `n` in `[-150, 128]`; the clamp keeps NaN, which propagates.
///
/// Accuracy (checked against the exactly rounded value over the whole f32 range by
/// `autograd/tests/float_range.rs`): relative error below [`EXP_F32_REL_ERROR`] where `e^x`
/// is a normal float; absolute error below `EXP_F32_REL_ERROR · f32::MIN_POSITIVE` where it is
/// subnormal; `e^-inf = 0` (a masked attention weight is exactly zero), `e^inf = inf`,
/// `+inf` exactly where the rounded result overflows (`x > 88.722_83`), `0` exactly where it
/// rounds to zero (`x < -103.972_08`).
///
/// Branch-free (selects and integer bit operations only), so slice loops over it vectorise.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // 0x3F31_7200
    const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 − LN2_HI
                                        // 1.5·2²³: adding it rounds to an integer n and leaves n in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    let xc = x.clamp(-104.0, 89.0);
    let shifted = fma(xc, LOG2E, ROUND);
    let nf = shifted - ROUND;
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND_BITS);
    let r = fma(-nf, LN2_LO, fma(-nf, LN2_HI, xc));
    // Horner's rule, one fused multiply-add per degree.
    let p = [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ]
    .into_iter()
    .fold(1.0 / 5040.0, |acc, c| fma(acc, r, c));
    // NaN inputs give garbage scales here, and NaN·anything = NaN.
    let n1 = n >> 1;
    let n2 = n.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    p * s1 * s2
}

/// The bound of [`exp_f32`]: relative error where the result is normal, and in units of
/// `f32::MIN_POSITIVE` where it is subnormal (measured over every float with separate
/// multiplies and adds: 1.03e-7 and 9.3e-8, i.e. under 2 ulp; with fused multiply-adds, on
/// `float_range`'s 1.8 million inputs: 7.4e-8 and 1.0e-7).
pub const EXP_F32_REL_ERROR: f32 = 1.2e-7;

/// `tanh(x)` in f32 without branches: the odd Taylor polynomial of degree 9 below `|x| = 0.3`
/// (truncation below 6e-8 relative), `±(1 − 2/(e^{2|x|} + 1))` with [`exp_f32`] above,
/// chosen by a select.
///
/// Accuracy (checked over the whole f32 range by `autograd/tests/float_range.rs`): relative
/// error below [`TANH_F32_REL_ERROR`] everywhere (the largest, 2.5e-7, just above 0.3 where
/// `1 − 2/(e+1)` cancels a little); subnormal inputs come back unchanged (`tanh x = x` to far
/// below their precision); `±inf → ±1`, NaN propagates, `tanh(-0) = -0`.
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

/// The bound of [`tanh_f32`]: relative error (measured over every float: 2.51e-7).
pub const TANH_F32_REL_ERROR: f32 = 3e-7;

/// The logistic sigmoid `σ(x) = 1 / (1 + e^{−x})` for bulk kernels, from one
/// [`Float::exp_fast`] of `−|x|` (which never overflows): `σ(|x|) = 1/(1 + e)` and
/// `σ(−|x|) = e/(1 + e)`, chosen by a select. The second form keeps the relative accuracy of
/// small results (the textbook `1 − σ(|x|)` cancels: it had no correct digit below `1e-8`).
///
/// In f32 (checked over the whole range by `autograd/tests/float_range.rs`): relative error
/// below [`SIGMOID_F32_REL_ERROR`] where the result is normal, absolute error below
/// `EXP_F32_REL_ERROR · f32::MIN_POSITIVE` where it is subnormal (`x < -87.33`, where
/// `σ(x) = e^x` to f32 precision); `σ(-inf) = 0`, `σ(inf) = 1`, NaN propagates. In f64 it
/// is `std`'s `exp` with three rounded operations.
#[inline(always)]
pub fn sigmoid<T: Float>(x: T) -> T {
    let e = (-x.abs()).exp_fast();
    let pos = T::ONE / (T::ONE + e);
    let neg = e * pos;
    if x >= T::ZERO {
        pos
    } else {
        neg
    }
}

/// The bound of [`sigmoid`] in f32: relative error where the result is normal (measured over
/// every float: 2.1e-7).
pub const SIGMOID_F32_REL_ERROR: f32 = 3e-7;

/// `√(2/π)`, the constant of GELU's tanh form.
const GELU_C: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of GELU's tanh form.
const GELU_A: f64 = 0.044_715;

/// GELU in its tanh form, `x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³)))`, computed as the equal
/// `x · σ(v)` with `v = 2√(2/π)·x·(1 + 0.044715 x²)` and [`sigmoid`], so that negative inputs
/// keep their relative accuracy (`1 + tanh(·)` cancels completely below about −5).
///
/// In f32 (checked over the whole range by `autograd/tests/float_range.rs`): error below
/// `GELU_F32_REL_ERROR · (1 + max(−v, 0))` relative where the result is normal, and in units
/// of `f32::MIN_POSITIVE` where it is subnormal. The factor `1 + max(−v, 0)` is the condition
/// number of `e^v` for negative `v`: rounding `v` itself costs that much, in any f32
/// evaluation. `gelu(-inf) = -0`, `gelu(inf) = inf`, NaN propagates.
#[inline(always)]
pub fn gelu<T: Float>(x: T) -> T {
    let v = T::from_f64(2.0 * GELU_C) * x * (T::ONE + T::from_f64(GELU_A) * x * x);
    let s = sigmoid(v);
    let y = x * s;
    // σ(v) = 0 only far left of zero (or at −inf, where x·0 would be NaN): the result is −0.
    if s == T::ZERO {
        -T::ZERO
    } else {
        y
    }
}

/// The bound factor of [`gelu`] in f32 (measured over every float: 1.85e-7).
pub const GELU_F32_REL_ERROR: f32 = 2.5e-7;

/// `d gelu/dx` for [`gelu`]: with `s = σ(v)`, `gelu = x·s` and
/// `gelu' = s + x·v'·s·(1 − s)`, `v' = 2√(2/π)(1 + 3·0.044715 x²)`. The second term is taken
/// as 0 where `s·(1 − s)` is (saturated inputs, ±inf included), where `x·v'` would overflow.
#[inline(always)]
pub fn gelu_derivative<T: Float>(x: T) -> T {
    let two_c = T::from_f64(2.0 * GELU_C);
    let v = two_c * x * (T::ONE + T::from_f64(GELU_A) * x * x);
    let dv = two_c * (T::ONE + T::from_f64(3.0 * GELU_A) * x * x);
    let s = sigmoid(v);
    let ds = s * (T::ONE - s);
    let slope = x * dv * ds;
    if ds == T::ZERO {
        s
    } else {
        s + slope
    }
}
