//! The caching allocator: freed device blocks are kept by size and handed out again.
//!
//! `cuMemAlloc`/`cuMemFree` synchronise the device and cost tens of microseconds; a solver
//! iteration allocates the same handful of sizes every time, so after the first iteration every
//! allocation is a hash-map pop. All work runs on one stream, so a block freed by the host can be
//! reused at once: any kernel that still reads it was queued before the kernel that will
//! overwrite it (the reasoning of PyTorch's caching allocator for a single stream).

use crate::error::CudaError;
use cudarc::driver::{result, sys::CUdeviceptr, CudaContext};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Byte counts of the caching allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in buffers that are alive now (rounded to block sizes).
    pub live_bytes: usize,
    /// The largest `live_bytes` seen since the last [`crate::Gpu::reset_peak`].
    pub peak_bytes: usize,
    /// Bytes of freed blocks held for reuse.
    pub cached_bytes: usize,
}

#[derive(Default)]
struct PoolState {
    free: HashMap<usize, Vec<CUdeviceptr>>,
    stats: MemoryStats,
}

pub(crate) struct Pool {
    ctx: Arc<CudaContext>,
    state: Mutex<PoolState>,
}

/// Rounds a request up to its block size: 512-byte steps below 1 MiB, 1 MiB steps above, so
/// that slightly different sizes share blocks without wasting more than 1/2 of small ones.
pub(crate) fn block_size(bytes: usize) -> usize {
    const SMALL: usize = 512;
    const LARGE: usize = 1 << 20;
    if bytes <= LARGE {
        bytes.max(1).next_multiple_of(SMALL)
    } else {
        bytes.next_multiple_of(LARGE)
    }
}

impl Pool {
    pub(crate) fn new(ctx: Arc<CudaContext>) -> Self {
        Pool {
            ctx,
            state: Mutex::new(PoolState::default()),
        }
    }

    /// A block of at least `bytes` bytes and its block size. Panics when the device is out of
    /// memory even after the cache was returned to the driver (like an OOM in PyTorch).
    pub(crate) fn alloc(&self, bytes: usize) -> (CUdeviceptr, usize) {
        let size = block_size(bytes);
        let mut st = self.state.lock().expect("pool lock");
        let reused = st.free.get_mut(&size).and_then(Vec::pop);
        let ptr = match reused {
            Some(ptr) => {
                st.stats.cached_bytes -= size;
                ptr
            }
            None => match self.malloc(size) {
                Ok(ptr) => ptr,
                Err(_) => {
                    Self::release_all(&self.ctx, &mut st);
                    self.malloc(size).unwrap_or_else(|e| {
                        panic!(
                            "CUDA out of memory: could not allocate {:.1} MiB with {:.1} MiB live \
                             ({e})",
                            size as f64 / 1048576.0,
                            st.stats.live_bytes as f64 / 1048576.0
                        )
                    })
                }
            },
        };
        st.stats.live_bytes += size;
        st.stats.peak_bytes = st.stats.peak_bytes.max(st.stats.live_bytes);
        (ptr, size)
    }

    fn malloc(&self, size: usize) -> Result<CUdeviceptr, CudaError> {
        self.ctx.bind_to_thread()?;
        // SAFETY: the context is bound to this thread; the block is owned by the pool.
        Ok(unsafe { result::malloc_sync(size) }?)
    }

    /// Takes a block back for reuse.
    pub(crate) fn free(&self, ptr: CUdeviceptr, size: usize) {
        let mut st = self.state.lock().expect("pool lock");
        st.stats.live_bytes -= size;
        st.stats.cached_bytes += size;
        st.free.entry(size).or_default().push(ptr);
    }

    /// Returns every cached block to the driver.
    pub(crate) fn empty_cache(&self) {
        let mut st = self.state.lock().expect("pool lock");
        Self::release_all(&self.ctx, &mut st);
    }

    fn release_all(ctx: &CudaContext, st: &mut PoolState) {
        if ctx.bind_to_thread().is_err() || ctx.synchronize().is_err() {
            return;
        }
        for (_, ptrs) in st.free.drain() {
            for ptr in ptrs {
                // SAFETY: every cached block came from `malloc_sync` and nothing refers to it;
                // the device was synchronised above, so no queued kernel still uses it.
                unsafe {
                    let _ = result::free_sync(ptr);
                }
            }
        }
        st.stats.cached_bytes = 0;
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        self.state.lock().expect("pool lock").stats
    }

    pub(crate) fn reset_peak(&self) {
        let mut st = self.state.lock().expect("pool lock");
        st.stats.peak_bytes = st.stats.live_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::block_size;

    #[test]
    fn block_sizes_round_up_and_never_shrink() {
        assert_eq!(block_size(0), 512);
        assert_eq!(block_size(1), 512);
        assert_eq!(block_size(513), 1024);
        assert_eq!(block_size(1 << 20), 1 << 20);
        assert_eq!(block_size((1 << 20) + 1), 2 << 20);
        for bytes in [3usize, 4096, 100_000, 5_000_000] {
            assert!(block_size(bytes) >= bytes);
        }
    }
}
