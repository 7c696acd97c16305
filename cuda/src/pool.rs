//! The caching allocator: freed device blocks are kept by size and handed out again.
//!
//! `cuMemAlloc`/`cuMemFree` synchronise the device and cost tens of microseconds; a solver
//! iteration allocates the same handful of sizes every time, so after the first iteration every
//! allocation is a hash-map pop. All work runs on one stream, so a block freed by the host can be
//! reused at once: any kernel that still reads it was queued before the kernel that will
//! overwrite it (the reasoning of PyTorch's caching allocator for a single stream).

use cudarc::driver::sys::{CUdeviceptr, CUresult};
use cudarc::driver::{result, CudaContext, DriverError};
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
    /// memory even after the cache was returned to the driver (like an OOM in PyTorch), and,
    /// saying so, when the allocation or the synchronisation before returning the cache fails
    /// for another reason (an earlier kernel fault leaves the context unusable).
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
                Err(e) if e.0 != CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                    panic!("{}", alloc_failure(size, st.stats.live_bytes, e))
                }
                Err(_) => {
                    let freeing = format!("an allocation of {}", mib(size));
                    Self::release_all(&self.ctx, &mut st, &freeing);
                    self.malloc(size).unwrap_or_else(|e| {
                        panic!("{}", alloc_failure(size, st.stats.live_bytes, e))
                    })
                }
            },
        };
        st.stats.live_bytes += size;
        st.stats.peak_bytes = st.stats.peak_bytes.max(st.stats.live_bytes);
        (ptr, size)
    }

    fn malloc(&self, size: usize) -> Result<CUdeviceptr, DriverError> {
        self.ctx.bind_to_thread()?;
        // SAFETY: the context is bound to this thread; the block is owned by the pool.
        unsafe { result::malloc_sync(size) }
    }

    /// Takes a block back for reuse.
    pub(crate) fn free(&self, ptr: CUdeviceptr, size: usize) {
        let mut st = self.state.lock().expect("pool lock");
        st.stats.live_bytes -= size;
        st.stats.cached_bytes += size;
        st.free.entry(size).or_default().push(ptr);
    }

    /// Returns every cached block to the driver. Panics, saying so, when synchronising first
    /// reports a kernel fault.
    pub(crate) fn empty_cache(&self) {
        let mut st = self.state.lock().expect("pool lock");
        Self::release_all(&self.ctx, &mut st, "empty_cache");
    }

    /// Synchronises the device, then frees every cached block. A failed synchronisation is a
    /// fault of some kernel queued earlier: it panics with what failed (`during` says what was
    /// being done), never as out of memory.
    fn release_all(ctx: &CudaContext, st: &mut PoolState, during: &str) {
        if let Err(e) = ctx.bind_to_thread().and_then(|()| ctx.synchronize()) {
            panic!("{}", sync_failure(during, e));
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

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// The error's name and, when the driver can be asked, its description.
fn describe(e: DriverError) -> String {
    if !crate::driver_present() {
        return format!("{:?}", e.0);
    }
    match e.error_string() {
        Ok(text) => format!("{:?}: {}", e.0, text.to_string_lossy()),
        Err(_) => format!("{:?}", e.0),
    }
}

/// Why `cuMemAlloc` of `size` bytes failed with `live` bytes in use: out of memory, or an
/// error that has nothing to do with memory (typically the sticky error of an earlier kernel
/// fault, which every later call returns).
fn alloc_failure(size: usize, live: usize, e: DriverError) -> String {
    if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        format!(
            "CUDA out of memory: could not allocate {} with {} live ({})",
            mib(size),
            mib(live),
            describe(e)
        )
    } else {
        format!(
            "CUDA allocation of {} failed with {} (not out of memory: the context is unusable, \
             most likely after an earlier kernel fault)",
            mib(size),
            describe(e)
        )
    }
}

/// A synchronisation before freeing cached blocks failed: some earlier kernel faulted.
fn sync_failure(during: &str, e: DriverError) -> String {
    format!(
        "CUDA kernel failed: synchronising the device to free cached memory (for {during}) \
         reported {} from a kernel queued earlier",
        describe(e)
    )
}

#[cfg(test)]
mod tests {
    use super::{alloc_failure, block_size, sync_failure};
    use cudarc::driver::{sys::CUresult, DriverError};

    #[test]
    fn a_failed_sync_or_allocation_after_a_kernel_fault_is_not_called_out_of_memory() {
        let fault = DriverError(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
        let msg = sync_failure("an allocation of 2.0 MiB", fault);
        assert!(msg.contains("CUDA kernel failed"), "{msg}");
        assert!(msg.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{msg}");
        assert!(msg.contains("an allocation of 2.0 MiB"), "{msg}");
        assert!(!msg.contains("out of memory"), "{msg}");
        let msg = alloc_failure(2 << 20, 1 << 20, fault);
        assert!(msg.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{msg}");
        assert!(msg.contains("not out of memory"), "{msg}");
        assert!(msg.contains("2.0 MiB"), "{msg}");
        let oom = alloc_failure(
            3 << 20,
            1 << 20,
            DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
        );
        assert!(oom.starts_with("CUDA out of memory: could not allocate 3.0 MiB with 1.0 MiB live"));
    }

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
