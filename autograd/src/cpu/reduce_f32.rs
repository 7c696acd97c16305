//! The f32 row reductions ([`super::rows`]' `sum`, `dot` and layer norm's pair of sums) as
//! explicit AVX2 + FMA loops.
//!
//! Why: the generic loops keep 16 lane accumulators in an array and rely on the compiler's
//! SLP pass to pack them into vector registers. Where they are inlined into a larger kernel
//! (layer norm's and log-softmax's backward rows) that pass packed them two floats at a time,
//! or not at all: `perf` showed `vmovsd` loads and scalar adds, four to eight times slower
//! than the vector loop. These loops use four 8-lane accumulators (a 32-float step, enough
//! independent chains to hide the add latency), then add the lanes; the tail is scalar. The
//! result differs from the generic loops' by rounding only: another summation order, and the
//! dots' products unrounded inside each fused multiply-add.
//!
//! Each function returns `None` when the CPU lacks AVX2 or FMA (or on another architecture):
//! the caller then runs its generic loop.

/// `x` viewed as f32 when `T` is f32.
#[inline(always)]
pub(crate) fn as_f32<T: 'static>(x: &[T]) -> Option<&[f32]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: `T` is `f32` (same type id), so the slice's layout is unchanged.
        Some(unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
    } else {
        None
    }
}

/// Whether the AVX2 + FMA loops can run (constant-folded when the build targets them, as the
/// x86-64-v3 default does; otherwise one cached feature check).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `Σ x`.
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return Some(unsafe { avx2::sum(x) });
    }
    let _ = x;
    None
}

/// `Σ a·b` (`a` and `b` of one length).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> Option<f32> {
    assert_eq!(a.len(), b.len(), "dot: lengths");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `sum`; the lengths are equal.
        return Some(unsafe { avx2::dot(a, b) });
    }
    None
}

/// `(Σ a·w, Σ a·w·(x − μ))` (without `w`: `(Σ a, Σ a·(x − μ))`) in one pass over the
/// slices, layer norm's two backward sums; the first is bit-equal to [`dot`] (or [`sum`]):
/// the same accumulators, steps and tail.
#[inline(always)]
pub(crate) fn sums_centered(
    a: &[f32],
    w: Option<&[f32]>,
    x: &[f32],
    mu: f32,
) -> Option<(f32, f32)> {
    assert!(
        a.len() == x.len() && w.is_none_or(|w| w.len() == x.len()),
        "sums_centered: lengths"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `dot`.
        return Some(unsafe { avx2::sums_centered(a, w, x, mu) });
    }
    let _ = mu;
    None
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Floats per step: four registers of eight.
    const STEP: usize = 32;

    /// The sum of the four accumulators' 32 lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn total(acc: [__m256; 4]) -> f32 {
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats; the store is unaligned.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
        lanes.iter().sum()
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum(x: &[f32]) -> f32 {
        let full = x.len() - x.len() % STEP;
        let mut acc = [_mm256_setzero_ps(); 4];
        let p = x.as_ptr();
        for i in (0..full).step_by(STEP) {
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: `i + 8r + 8 ≤ full ≤ x.len()`.
                *a = _mm256_add_ps(*a, unsafe { _mm256_loadu_ps(p.add(i + 8 * r)) });
            }
        }
        // SAFETY: the CPU features are this function's own.
        unsafe { total(acc) + x[full..].iter().sum::<f32>() }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let full = a.len() - a.len() % STEP;
        let mut acc = [_mm256_setzero_ps(); 4];
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        for i in (0..full).step_by(STEP) {
            for (r, s) in acc.iter_mut().enumerate() {
                let o = i + 8 * r;
                // SAFETY: `o + 8 ≤ full ≤` both lengths.
                let (va, vb) = unsafe { (_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o))) };
                *s = _mm256_fmadd_ps(va, vb, *s);
            }
        }
        let tail: f32 = a[full..].iter().zip(&b[full..]).map(|(x, y)| x * y).sum();
        // SAFETY: the CPU features are this function's own.
        unsafe { total(acc) + tail }
    }

    /// `(Σ a·w, Σ a·w·(x − μ))`, or `(Σ a, Σ a·(x − μ))` without `w`, in one loop.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the slices share one length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sums_centered(
        a: &[f32],
        w: Option<&[f32]>,
        x: &[f32],
        mu: f32,
    ) -> (f32, f32) {
        let full = a.len() - a.len() % STEP;
        let (mut plain, mut centred) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
        let (pa, px) = (a.as_ptr(), x.as_ptr());
        let m = _mm256_set1_ps(mu);
        match w {
            Some(w) => {
                let pw = w.as_ptr();
                for i in (0..full).step_by(STEP) {
                    for r in 0..4 {
                        let o = i + 8 * r;
                        // SAFETY: `o + 8 ≤ full ≤` every length.
                        let (va, vw, vx) = unsafe {
                            (
                                _mm256_loadu_ps(pa.add(o)),
                                _mm256_loadu_ps(pw.add(o)),
                                _mm256_loadu_ps(px.add(o)),
                            )
                        };
                        plain[r] = _mm256_fmadd_ps(va, vw, plain[r]);
                        centred[r] = _mm256_fmadd_ps(
                            _mm256_mul_ps(va, vw),
                            _mm256_sub_ps(vx, m),
                            centred[r],
                        );
                    }
                }
            }
            None => {
                for i in (0..full).step_by(STEP) {
                    for r in 0..4 {
                        let o = i + 8 * r;
                        // SAFETY: as above.
                        let (va, vx) =
                            unsafe { (_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(px.add(o))) };
                        plain[r] = _mm256_add_ps(plain[r], va);
                        centred[r] = _mm256_fmadd_ps(va, _mm256_sub_ps(vx, m), centred[r]);
                    }
                }
            }
        }
        let plain_tail: f32 = match w {
            Some(w) => a[full..].iter().zip(&w[full..]).map(|(p, q)| p * q).sum(),
            None => a[full..].iter().sum(),
        };
        let centred_tail: f32 = (full..a.len())
            .map(|i| a[i] * w.map_or(1.0, |w| w[i]) * (x[i] - mu))
            .sum();
        // SAFETY: the CPU features are this function's own.
        unsafe { (total(plain) + plain_tail, total(centred) + centred_tail) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs of every length around the 32-float step, against f64 sums.
    #[test]
    fn the_vector_loops_equal_f64_sums_at_every_tail_length() {
        for n in [0usize, 1, 7, 8, 31, 32, 33, 63, 64, 100, 257] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32) * 0.02 - 1.0)
                .collect();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + ((i * 11 % 13) as f32) * 0.1).collect();
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 13 % 97) as f32) * 0.01 + 3.0)
                .collect();
            let mu = 3.4f32;
            let f = |v: f32| v as f64;
            let want_sum: f64 = a.iter().map(|&v| f(v)).sum();
            let want_dot: f64 = a.iter().zip(&w).map(|(&p, &q)| f(p) * f(q)).sum();
            let want_c: f64 = a.iter().zip(&x).map(|(&p, &v)| f(p) * (f(v) - f(mu))).sum();
            let want_c3: f64 = (0..n).map(|i| f(a[i]) * f(w[i]) * (f(x[i]) - f(mu))).sum();
            let close = |got: Option<f32>, want: f64, what: &str| {
                let Some(got) = got else { return }; // no AVX2 on this CPU
                let scale: f64 = 1.0 + n as f64;
                assert!(
                    (f(got) - want).abs() <= 1e-5 * scale,
                    "{what} n={n}: {got} vs {want}"
                );
            };
            close(sum(&a), want_sum, "sum");
            close(dot(&a, &w), want_dot, "dot");
            close(
                sums_centered(&a, None, &x, mu).map(|s| s.1),
                want_c,
                "Σ a·(x − μ)",
            );
            let centred3 = sums_centered(&a, Some(&w), &x, mu).map(|s| s.1);
            close(centred3, want_c3, "Σ a·w·(x − μ)");
        }
    }

    /// The one-pass pair's plain sums are bit-equal to [`dot`] and [`sum`], with and without `w`.
    #[test]
    fn the_one_pass_plain_sums_equal_dot_and_sum_bit_for_bit() {
        for n in [0usize, 1, 9, 31, 32, 33, 64, 100, 256, 257] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 29 % 83) as f32) * 0.03 - 1.2)
                .collect();
            let w: Vec<f32> = (0..n).map(|i| 0.4 + ((i * 7 % 17) as f32) * 0.07).collect();
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 19 % 89) as f32) * 0.02 - 0.5)
                .collect();
            let Some((with_w, _)) = sums_centered(&a, Some(&w), &x, 0.37) else {
                return; // no AVX2 on this CPU
            };
            assert_eq!(
                with_w.to_bits(),
                dot(&a, &w).unwrap().to_bits(),
                "n={n}: Σ a·w"
            );
            let (without, _) = sums_centered(&a, None, &x, 0.37).unwrap();
            assert_eq!(without.to_bits(), sum(&a).unwrap().to_bits(), "n={n}: Σ a");
        }
    }

    #[test]
    fn only_f32_slices_are_viewed_as_f32() {
        assert!(as_f32(&[1.0f32, 2.0]).is_some());
        assert!(as_f32(&[1.0f64, 2.0]).is_none());
    }
}
