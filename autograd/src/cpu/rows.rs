//! Vectorised reductions and maps over one row: the building blocks of the row kernels
//! (softmax, log-softmax, layer norm, cross-entropy).
//!
//! A plain `iter().sum()` over floats is a serial chain (the compiler may not reorder float
//! additions), so it runs one element per add latency. These loops keep [`LANES`] independent
//! accumulators over fixed-size chunks, which the compiler turns into SIMD registers (16 f32 =
//! two AVX2 or one AVX-512 register), and combine them at the end. The result differs from the
//! serial sum only by rounding order. For f32 on x86-64 CPUs with AVX2 and FMA the plain
//! reductions (`sum`, `dot` and layer norm's pair `sums_centered`) run explicit vector loops
//! (`cpu::reduce_f32`, whose fused multiply-adds also round differently): inlined into
//! larger kernels, the lane arrays were not always packed into vector registers. The single
//! centred dots (`dot_centered`, `dot3_centered`) are the generic loops only: their one
//! caller is `sums_centered`'s fallback.

use super::reduce_f32;
use super::reduce_f32::as_f32 as f32_view;
use crate::float::Float;

/// Independent accumulators per reduction.
pub const LANES: usize = 16;

#[inline(always)]
fn fold_lanes<T: Float>(acc: [T; LANES], op: impl Fn(T, T) -> T) -> T {
    let mut a = acc;
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            a[l] = op(a[l], a[l + width]);
        }
        width /= 2;
    }
    a[0]
}

/// `Σ x`.
#[inline]
pub fn sum<T: Float>(x: &[T]) -> T {
    if let Some(s) = f32_view(x).and_then(reduce_f32::sum) {
        return T::from_f64(s.into());
    }
    let mut acc = [T::ZERO; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    tail.iter()
        .fold(fold_lanes(acc, |a, b| a + b), |s, &v| s + v)
}

/// `Σ a·b`.
#[inline]
pub fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    debug_assert_eq!(a.len(), b.len());
    if let (Some(af), Some(bf)) = (f32_view(a), f32_view(b)) {
        if let Some(s) = reduce_f32::dot(af, bf) {
            return T::from_f64(s.into());
        }
    }
    let mut acc = [T::ZERO; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::ZERO, |s, (&x, &y)| s + x * y);
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    fold_lanes(acc, |a, b| a + b) + tail
}

/// `Σ a·(x − μ)`: a dot product with `x` centred, as layer norm's backward needs it
/// (centring before the product keeps the accuracy when `|μ| ≫` the spread of `x`).
#[inline]
pub fn dot_centered<T: Float>(a: &[T], x: &[T], mu: T) -> T {
    assert_eq!(a.len(), x.len(), "dot_centered: lengths");
    let mut acc = [T::ZERO; LANES];
    let (ca, cx) = (a.chunks_exact(LANES), x.chunks_exact(LANES));
    let tail = ca
        .remainder()
        .iter()
        .zip(cx.remainder())
        .fold(T::ZERO, |s, (&p, &v)| s + p * (v - mu));
    for (p, v) in ca.zip(cx) {
        for l in 0..LANES {
            acc[l] += p[l] * (v[l] - mu);
        }
    }
    fold_lanes(acc, |a, b| a + b) + tail
}

/// `(Σ a·w, Σ a·w·(x − μ))`, or `(Σ a, Σ a·(x − μ))` without `w`: layer norm's backward
/// sums. For f32 on AVX2 one pass over the slices (explicit vector loops); otherwise [`dot`]
/// (or [`sum`]) and the generic [`dot3_centered`] (or [`dot_centered`]).
#[inline]
pub fn sums_centered<T: Float>(a: &[T], w: Option<&[T]>, x: &[T], mu: T) -> (T, T) {
    if let (Some(af), Some(xf)) = (f32_view(a), f32_view(x)) {
        let wf = w.map(|w| f32_view(w).expect("w has a's type"));
        if let Some((p, c)) = reduce_f32::sums_centered(af, wf, xf, mu.to_f64() as f32) {
            return (T::from_f64(p.into()), T::from_f64(c.into()));
        }
    }
    match w {
        Some(w) => (dot(a, w), dot3_centered(a, w, x, mu)),
        None => (sum(a), dot_centered(a, x, mu)),
    }
}

/// `Σ a·w·(x − μ)`: [`dot_centered`] of `a ⊙ w`.
#[inline]
pub fn dot3_centered<T: Float>(a: &[T], w: &[T], x: &[T], mu: T) -> T {
    assert!(
        a.len() == x.len() && w.len() == x.len(),
        "dot3_centered: lengths"
    );
    let mut acc = [T::ZERO; LANES];
    let (ca, cw, cx) = (
        a.chunks_exact(LANES),
        w.chunks_exact(LANES),
        x.chunks_exact(LANES),
    );
    let tail = ca
        .remainder()
        .iter()
        .zip(cw.remainder())
        .zip(cx.remainder())
        .fold(T::ZERO, |s, ((&p, &q), &v)| s + p * q * (v - mu));
    for ((p, q), v) in ca.zip(cw).zip(cx) {
        for l in 0..LANES {
            acc[l] += p[l] * q[l] * (v[l] - mu);
        }
    }
    fold_lanes(acc, |a, b| a + b) + tail
}

/// `max x` (`-∞` for an empty row; a NaN entry may or may not propagate).
#[inline]
pub fn max<T: Float>(x: &[T]) -> T {
    let mut acc = [-T::INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let m = fold_lanes(acc, |a, b| if b > a { b } else { a });
    tail.iter().fold(m, |m, &v| if v > m { v } else { m })
}

/// `out = e^(x − m)`, returning `Σ out`.
#[inline(always)]
fn exp_shifted_body<T: Float>(x: &[T], m: T, out: &mut [T]) -> T {
    debug_assert_eq!(x.len(), out.len());
    let full = x.len() - x.len() % LANES;
    let mut acc = [T::ZERO; LANES];
    for (o, v) in out[..full]
        .chunks_exact_mut(LANES)
        .zip(x[..full].chunks_exact(LANES))
    {
        for l in 0..LANES {
            o[l] = (v[l] - m).exp_fast();
            acc[l] += o[l];
        }
    }
    let mut s = fold_lanes(acc, |a, b| a + b);
    for (o, &v) in out[full..].iter_mut().zip(&x[full..]) {
        *o = (v - m).exp_fast();
        s += *o;
    }
    s
}

/// `x ← e^(x − m)` in place, returning the sum.
#[inline(always)]
fn exp_shifted_in_place_body<T: Float>(x: &mut [T], m: T) -> T {
    let full = x.len() - x.len() % LANES;
    let mut acc = [T::ZERO; LANES];
    for c in x[..full].chunks_exact_mut(LANES) {
        for l in 0..LANES {
            c[l] = (c[l] - m).exp_fast();
            acc[l] += c[l];
        }
    }
    let mut s = fold_lanes(acc, |a, b| a + b);
    for v in &mut x[full..] {
        *v = (*v - m).exp_fast();
        s += *v;
    }
    s
}

/// `Σ e^(x − m)` without storing the exponentials.
#[inline(always)]
fn exp_shifted_sum_body<T: Float>(x: &[T], m: T) -> T {
    let mut acc = [T::ZERO; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(T::ZERO, |s, &v| s + (v - m).exp_fast());
    for c in chunks {
        for l in 0..LANES {
            acc[l] += (c[l] - m).exp_fast();
        }
    }
    fold_lanes(acc, |a, b| a + b) + tail
}

/// `dst (+)= scale·e^(x − m)` (overwrites unless `acc`): the cross-entropy and log-softmax
/// gradients' exponential pass.
#[inline(always)]
fn scaled_exp_body<T: Float>(x: &[T], m: T, scale: T, dst: &mut [T], acc: bool) {
    if acc {
        dst.iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o += scale * (v - m).exp_fast());
    } else {
        dst.iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = scale * (v - m).exp_fast());
    }
}

/// `dst (+)= g − s·e^y` (overwrites unless `acc`): log-softmax's VJP row, one pass over the
/// row where a copy of `g` and then an exponential pass over `dst` took two.
#[inline(always)]
fn minus_scaled_exp_body<T: Float>(g: &[T], y: &[T], s: T, dst: &mut [T], acc: bool) {
    let it = dst.iter_mut().zip(g.iter().zip(y));
    if acc {
        it.for_each(|(o, (&g, &y))| *o += g - s * y.exp_fast());
    } else {
        it.for_each(|(o, (&g, &y))| *o = g - s * y.exp_fast());
    }
}

/// Defines `pub fn $name` calling `$body`, through an AVX-512 compiled twin when the CPU has
/// it: the exponential loops are compute-bound on rows that sit in cache, and 16 lanes run
/// them about twice as fast as the 8 of the x86-64-v3 baseline.
macro_rules! wide {
    ($(#[$doc:meta])* $name:ident => $body:ident ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        #[inline]
        pub fn $name<T: Float>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    #[target_feature(enable = "avx512f")]
                    unsafe fn wide<T: Float>($($arg: $ty),*) -> $ret {
                        $body($($arg),*)
                    }
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

wide!(
    /// `out = e^(x − m)`, returning `Σ out`.
    exp_shifted => exp_shifted_body(x: &[T], m: T, out: &mut [T]) -> T
);
wide!(
    /// `x ← e^(x − m)` in place, returning the sum.
    exp_shifted_in_place => exp_shifted_in_place_body(x: &mut [T], m: T) -> T
);
wide!(
    /// `Σ e^(x − m)` without storing the exponentials.
    exp_shifted_sum => exp_shifted_sum_body(x: &[T], m: T) -> T
);
wide!(
    /// `dst (+)= scale·e^(x − m)`.
    scaled_exp => scaled_exp_body(x: &[T], m: T, scale: T, dst: &mut [T], acc: bool) -> ()
);
wide!(
    /// `dst (+)= g − s·e^y`.
    minus_scaled_exp => minus_scaled_exp_body(g: &[T], y: &[T], s: T, dst: &mut [T], acc: bool) -> ()
);

/// `log Σ e^x`, stable (`-∞` for an empty or all `-∞` row, `+∞`/NaN propagate).
#[inline]
pub fn logsumexp<T: Float>(x: &[T]) -> T {
    let m = max(x);
    if !m.is_finite() {
        return m;
    }
    m + exp_shifted_sum(x, m).ln()
}

/// `(mean, Σ (x − mean)²)` in two passes (the second pass over a row still in cache).
#[inline]
pub fn mean_and_sq_dev<T: Float>(x: &[T]) -> (T, T) {
    let n = T::from_usize(x.len().max(1));
    let mean = sum(x) / n;
    let mut acc = [T::ZERO; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(T::ZERO, |s, &v| s + (v - mean) * (v - mean));
    for c in chunks {
        for l in 0..LANES {
            let d = c[l] - mean;
            acc[l] += d * d;
        }
    }
    (mean, fold_lanes(acc, |a, b| a + b) + tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_reductions_match_serial_ones() {
        for n in [0usize, 1, 5, 16, 17, 33, 100] {
            let x: Vec<f64> = (0..n).map(|i| ((i * 7 % 11) as f64) * 0.3 - 1.2).collect();
            let y: Vec<f64> = (0..n).map(|i| ((i * 5 % 13) as f64) * 0.1 - 0.4).collect();
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
            assert!(close(sum(&x), x.iter().sum()));
            assert!(close(
                dot(&x, &y),
                x.iter().zip(&y).map(|(a, b)| a * b).sum()
            ));
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max(&x), m);
            if n > 0 {
                let serial: f64 = x.iter().map(|v| (v - m).exp()).sum();
                let mut out = vec![0.0; n];
                assert!(close(exp_shifted(&x, m, &mut out), serial));
                assert!(close(exp_shifted_sum(&x, m), serial));
                assert!(out.iter().zip(&x).all(|(o, v)| close(*o, (v - m).exp())));
                assert!(close(logsumexp(&x), m + serial.ln()));
                let mean = x.iter().sum::<f64>() / n as f64;
                let sq: f64 = x.iter().map(|v| (v - mean).powi(2)).sum();
                let (mu, s2) = mean_and_sq_dev(&x);
                assert!(close(mu, mean) && close(s2, sq));
            }
        }
    }
}
