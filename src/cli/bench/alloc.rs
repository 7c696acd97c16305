//! A counting global allocator: live and peak heap bytes, for the memory figures of
//! `deq bench` (the binary installs it in `main.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator plus two counters.
pub struct Counting;

// SAFETY: forwards to the system allocator unchanged; the counters do not affect allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as `System.alloc`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as `System.dealloc`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Runs `f` and returns its result with the peak live heap above the level at entry (the CPU
/// buffer pool emptied first).
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let dev = super::device();
    if let Some((base, _)) = dev.memory() {
        // On a GPU: the caching allocator's peak of live device bytes.
        dev.synchronize();
        dev.reset_peak_memory();
        let r = f();
        dev.synchronize();
        let peak = dev.memory().map_or(0, |(_, p)| p);
        return (r, peak.saturating_sub(base));
    }
    // From an empty CPU buffer pool: buffers pooled during `f` stay allocated and count as live.
    deq_autograd::pool::clear();
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let r = f();
    (r, PEAK.load(Ordering::SeqCst).saturating_sub(base))
}
