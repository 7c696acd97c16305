//! Keeps freed tensor buffers in the process instead of returning them to the kernel.
//!
//! glibc serves allocations above its mmap threshold (128 KiB, raised adaptively) with fresh
//! `mmap`s and unmaps them on free, and it trims the heap top back to the kernel. A solver
//! iteration frees and reallocates the same activation-sized buffers (0.1–40 MB) every call,
//! which can then come back as new zero-filled pages (in a profile of `deq bench --workload
//! w2`, kernel page clearing was 9% of the samples, though most of it is the first touch of the
//! unrolled comparison's 1.9 GB, which no allocator setting avoids). Raising both thresholds
//! to their maxima makes these buffers come from, and return to, the heap that glibc reuses.
//!
//! Process-wide policy, so the binary sets it at start; library users can do the same (or use
//! another allocator).

/// Applies the policy (no-op off glibc).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        // 32 MiB is glibc's upper limit for the mmap threshold on 64-bit targets.
        const MMAP_MAX_THRESHOLD: c_int = 32 << 20;
        // SAFETY: mallopt only adjusts allocator parameters; called before any threads start.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, MMAP_MAX_THRESHOLD);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }
}
