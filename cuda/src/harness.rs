//! The rules every GPU test follows: when it runs, skips or fails, and how it compares values
//! computed on the GPU with the CPU's reference.
//!
//! Used by the GPU tests of `deq-cuda`, `deq-autograd` and `deq-solvers` (and the check script
//! run on a GPU machine), so that the rules live in one place:
//!
//! - A test **skips**, printing why, only when the machine has no GPU to use
//!   ([`ErrorKind::Unavailable`]: no driver, no device, a CUDA library that cannot be loaded),
//!   so that `cargo test` passes on machines without a GPU or without the CUDA toolkit.
//! - It **fails** on everything else ([`ErrorKind::Fault`]): NVRTC rejecting a kernel, the
//!   driver rejecting the compiled module, cuBLAS failing to start.
//! - With `DEQ_REQUIRE_GPU=1` (the check script sets it) nothing skips: a device that does not
//!   open fails the test with the reason.
//! - Values compare by [`compare`]: a NaN or an infinity on one side only is a mismatch, equal
//!   infinities and NaN on both sides match, finite values are compared relative to the scale
//!   of the reference.

use crate::error::{CudaError, ErrorKind};
use crate::Gpu;
use std::ffi::OsStr;

/// The environment variable that turns every skip into a failure.
pub const REQUIRE_GPU_VAR: &str = "DEQ_REQUIRE_GPU";

/// True when `DEQ_REQUIRE_GPU` is set to anything but the empty string or `0`.
pub fn gpu_required() -> bool {
    required_from(std::env::var_os(REQUIRE_GPU_VAR).as_deref())
}

/// [`gpu_required`] for a given value of the variable (`None`: unset).
pub fn required_from(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// What a GPU test does when its device did not open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Skip, printing this line (there is no GPU to test here).
    Skip(String),
    /// Fail with this message.
    Fail(String),
}

/// The verdict for `test` when opening the device failed with `err`; `required` is
/// [`gpu_required`].
pub fn verdict(test: &str, err: &CudaError, required: bool) -> Verdict {
    match (err.kind(), required) {
        (ErrorKind::Unavailable, false) => Verdict::Skip(format!("{test}: skipped, {err}")),
        (ErrorKind::Unavailable, true) => Verdict::Fail(format!(
            "{test}: {REQUIRE_GPU_VAR}=1 but the GPU did not open: {err}"
        )),
        (ErrorKind::Fault, _) => Verdict::Fail(format!(
            "{test}: a GPU is present but failed to open: {err}"
        )),
    }
}

/// Applies the rules to the outcome of opening a device: `Some` to run the test, `None` after
/// printing why it skips.
///
/// # Panics
/// With the reason, when the test must fail (see [`verdict`]): this is a test harness's
/// assertion, meant to be called from tests.
pub fn run_or_skip<T>(test: &str, opened: Result<T, CudaError>, required: bool) -> Option<T> {
    match opened {
        Ok(device) => Some(device),
        Err(e) => match verdict(test, &e, required) {
            Verdict::Skip(line) => {
                eprintln!("{line}");
                None
            }
            Verdict::Fail(msg) => panic!("{msg}"),
        },
    }
}

/// `cuda:0` for the GPU test `test`, under the rules above (reads `DEQ_REQUIRE_GPU`).
///
/// # Panics
/// When the device failed to open for any reason but a missing GPU, or for any reason at all
/// with `DEQ_REQUIRE_GPU=1`.
pub fn test_gpu(test: &str) -> Option<Gpu> {
    run_or_skip(test, Gpu::open(0), gpu_required())
}

/// Whether two values agree: NaN on both sides, or equal infinities, or finite values with
/// `|a − b| ≤ atol + rtol · max(|a|, |b|)`. A NaN or an infinity on one side only never agrees.
pub fn agree(a: f64, b: f64, rtol: f64, atol: f64) -> bool {
    match finite_pair(a, b) {
        Pair::Finite => (a - b).abs() <= atol + rtol * a.abs().max(b.abs()),
        Pair::Same => true,
        Pair::Mismatch => false,
    }
}

enum Pair {
    /// Both finite: compare the numbers.
    Finite,
    /// Both NaN, or the same infinity.
    Same,
    /// A NaN or an infinity on one side only, or infinities of opposite signs.
    Mismatch,
}

fn finite_pair(a: f64, b: f64) -> Pair {
    if a.is_finite() && b.is_finite() {
        Pair::Finite
    } else if (a.is_nan() && b.is_nan()) || a == b {
        Pair::Same
    } else {
        Pair::Mismatch
    }
}

/// Compares `got` (the GPU's values) with `want` (the CPU's reference).
///
/// Returns the scaled error `max |got − want| / max |want|` over the entries that are finite on
/// both sides (the absolute error when every finite `want` is 0, and 0 when there are no
/// finite pairs), or an error naming the first mismatch when `tol` is exceeded, the lengths
/// differ, or some entry is NaN or infinite on one side only (or infinite with opposite
/// signs). NaN on both sides and equal infinities match: the masked `−∞` of an attention
/// forward must come out as `−∞`.
pub fn compare(got: &[f64], want: &[f64], tol: f64) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{} values on the GPU, {} on the CPU",
            got.len(),
            want.len()
        ));
    }
    let mut scale = 0.0f64;
    let mut diff = 0.0f64;
    let mut worst = 0;
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        match finite_pair(g, w) {
            Pair::Finite => {
                scale = scale.max(w.abs());
                let d = (g - w).abs();
                if d > diff {
                    diff = d;
                    worst = i;
                }
            }
            Pair::Same => {}
            Pair::Mismatch => bad.push(i),
        }
    }
    if let Some(&i) = bad.first() {
        return Err(format!(
            "{} of {} values non-finite on one side only (first at [{i}]: gpu {:e}, cpu {:e})",
            bad.len(),
            got.len(),
            got[i],
            want[i]
        ));
    }
    let err = if scale == 0.0 { diff } else { diff / scale };
    if err > tol {
        return Err(format!(
            "error {err:.2e} > {tol:.0e} (worst at [{worst}]: gpu {:e}, cpu {:e})",
            got[worst], want[worst]
        ));
    }
    Ok(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;
    const NAN: f64 = f64::NAN;

    #[test]
    fn the_variable_requires_a_gpu_unless_empty_or_zero() {
        assert!(!required_from(None));
        assert!(!required_from(Some(OsStr::new(""))));
        assert!(!required_from(Some(OsStr::new("0"))));
        assert!(required_from(Some(OsStr::new("1"))));
        assert!(required_from(Some(OsStr::new("yes"))));
    }

    #[test]
    fn a_missing_gpu_skips_unless_required_and_a_fault_always_fails() {
        let no_driver = CudaError::NoDriver;
        match verdict("t", &no_driver, false) {
            Verdict::Skip(line) => assert_eq!(line, format!("t: skipped, {no_driver}")),
            v => panic!("{v:?}"),
        }
        match verdict("t", &no_driver, true) {
            Verdict::Fail(msg) => {
                assert!(msg.contains("DEQ_REQUIRE_GPU=1"), "{msg}");
                assert!(msg.contains("no CUDA driver found"), "{msg}");
            }
            v => panic!("{v:?}"),
        }
        let lib = CudaError::MissingLibrary("libcublas");
        assert!(matches!(verdict("t", &lib, false), Verdict::Skip(_)));
        for required in [false, true] {
            let fault = CudaError::Compile("error: expected a \";\"".into());
            match verdict("t", &fault, required) {
                Verdict::Fail(msg) => {
                    assert!(msg.contains("failed to open"), "{msg}");
                    assert!(msg.contains("expected a"), "{msg}");
                }
                v => panic!("{v:?}"),
            }
        }
    }

    #[test]
    fn run_or_skip_returns_the_device_or_skips_or_panics_with_the_reason() {
        assert_eq!(run_or_skip("t", Ok::<_, CudaError>(7), true), Some(7));
        assert_eq!(
            run_or_skip::<u8>("t", Err(CudaError::NoDriver), false),
            None
        );
        let required =
            std::panic::catch_unwind(|| run_or_skip::<u8>("t", Err(CudaError::NoDriver), true));
        let msg = *required
            .expect_err("must fail")
            .downcast::<String>()
            .unwrap();
        assert!(msg.contains("no CUDA driver found"), "{msg}");
        let fault = std::panic::catch_unwind(|| {
            run_or_skip::<u8>("t", Err(CudaError::KernelLoad("bad".into())), false)
        });
        let msg = *fault.expect_err("must fail").downcast::<String>().unwrap();
        assert!(msg.contains("rejected the compiled kernels: bad"), "{msg}");
    }

    /// On this machine: without a GPU, `test_gpu` skips when not required and fails, naming
    /// the reason, when required. With a working GPU it returns the device either way.
    #[test]
    fn test_gpu_follows_the_rules_on_this_machine() {
        match Gpu::open(0) {
            Ok(_) => assert!(run_or_skip("t", Gpu::open(0), true).is_some()),
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                assert!(run_or_skip("t", Gpu::open(0), false).is_none());
                let failed = std::panic::catch_unwind(|| run_or_skip("t", Gpu::open(0), true));
                let msg = *failed.expect_err("must fail").downcast::<String>().unwrap();
                assert!(msg.contains(&e.to_string()), "{msg}");
            }
            Err(e) => {
                let failed = std::panic::catch_unwind(|| run_or_skip("t", Gpu::open(0), false));
                assert!(failed.is_err(), "a fault must fail: {e}");
            }
        }
    }

    #[test]
    fn equal_values_and_equal_infinities_agree() {
        assert!(agree(1.0, 1.0, 0.0, 0.0));
        assert!(agree(INF, INF, 0.0, 0.0));
        assert!(agree(-INF, -INF, 0.0, 0.0));
        assert!(agree(NAN, NAN, 0.0, 0.0));
        assert!(agree(1.0, 1.0 + 1e-10, 1e-9, 0.0));
        assert!(agree(1e-20, 2e-20, 0.0, 1e-19));
    }

    #[test]
    fn one_sided_nan_or_infinity_never_agrees() {
        for tol in [0.0, 1e-6, 1e300] {
            assert!(!agree(NAN, 1.0, tol, tol));
            assert!(!agree(1.0, NAN, tol, tol));
            assert!(!agree(INF, 1.0, tol, tol));
            assert!(!agree(1.0, -INF, tol, tol));
            assert!(!agree(INF, -INF, tol, tol));
            assert!(!agree(NAN, INF, tol, tol));
        }
        assert!(!agree(1.0, 1.1, 1e-3, 0.0));
    }

    #[test]
    fn compare_rejects_a_nan_or_infinity_on_one_side() {
        let want = [1.0, -2.0, 3.0];
        assert_eq!(compare(&want, &want, 0.0), Ok(0.0));
        let err = compare(&[1.0, NAN, 3.0], &want, 1.0).unwrap_err();
        assert!(err.contains("first at [1]"), "{err}");
        assert!(compare(&want, &[1.0, NAN, 3.0], 1.0).is_err());
        assert!(compare(&[1.0, -2.0, INF], &want, 1.0).is_err());
        assert!(compare(&want, &[1.0, -2.0, INF], 1.0).is_err());
        assert!(compare(&[-INF, 0.0], &[INF, 0.0], 1.0).is_err());
        // One NaN among many finite values is still found (f64::max would drop it).
        let mut got = vec![0.5; 1000];
        got[999] = NAN;
        assert!(compare(&got, &[0.5; 1000], 1.0).is_err());
    }

    #[test]
    fn compare_passes_equal_infinities_and_scales_the_finite_rest() {
        let want = [-INF, 2.0, -INF, 4.0];
        let got = [-INF, 2.0, -INF, 4.0 + 4e-6];
        // The infinities neither make the scale infinite nor hide the finite error.
        let e = compare(&got, &want, 1e-5).unwrap();
        assert!((e - 1e-6).abs() < 1e-12, "{e}");
        assert!(compare(&got, &want, 1e-7).is_err());
        assert_eq!(compare(&[NAN, 1.0], &[NAN, 1.0], 0.0), Ok(0.0));
        assert_eq!(compare(&[INF], &[INF], 0.0), Ok(0.0));
    }

    #[test]
    fn compare_uses_the_absolute_error_against_zeros_and_checks_lengths() {
        assert_eq!(compare(&[0.0, 0.0], &[0.0, 0.0], 0.0), Ok(0.0));
        assert!(compare(&[0.0, 1e-3], &[0.0, 0.0], 1e-4).is_err());
        assert!(compare(&[0.0, 1e-6], &[0.0, 0.0], 1e-4).is_ok());
        assert!(compare(&[1.0], &[1.0, 2.0], 1.0).is_err());
    }
}
