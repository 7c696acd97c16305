//! Transformer-XL's relative shift of attention scores on the device (kernel in
//! `rel_shift.cu`): index arithmetic on the device, so no index vector is built on the host or
//! uploaded per call.

use crate::launch::{launch, linear, Arg};
use crate::{GpuBuffer, GpuFloat};

/// `dst (+)= shift(src)` over rows of `k` values, `t` rows per `[T, K]` matrix (`k ≥ t`,
/// `mem = k − t`): `dst[.., i, j] (+)= src[.., i, mem + i − j]` for `j ≤ mem + i`, `(+)= 0`
/// past it. The map is its own transpose, so this is both the forward pass (into a fresh
/// buffer) and its VJP (with the cotangent as `src`).
pub fn rel_shift<T: GpuFloat>(
    src: &GpuBuffer<T>,
    t: usize,
    k: usize,
    dst: &mut GpuBuffer<T>,
    acc: bool,
) {
    assert!(
        k >= t && (src.is_empty() || (t > 0 && src.len().is_multiple_of(t * k))),
        "rel_shift: {} values are not blocks of [{t}, {k}] with K ≥ T",
        src.len()
    );
    assert_eq!(
        src.len(),
        dst.len(),
        "rel_shift: source of {} values, destination of {}",
        src.len(),
        dst.len()
    );
    if src.is_empty() {
        return;
    }
    launch::<T>(
        src.gpu(),
        "rel_shift",
        linear(src.len()),
        &[
            Arg::Ptr(src.ptr()),
            Arg::Ptr(dst.ptr()),
            Arg::len(src.len()),
            Arg::len(t),
            Arg::len(k),
            Arg::len(k - t),
            Arg::flag(acc),
        ],
    );
}
