//! `GpuBuffer<T>`: a typed block of device memory from the caching allocator.

use crate::float::Element;
use crate::Gpu;
use cudarc::driver::{result, sys::CUdeviceptr};
use std::marker::PhantomData;

/// `len` values of type `T` in device memory, owned; the block goes back to the device's cache
/// when dropped. Cloning copies on the device (queued, no host round trip).
pub struct GpuBuffer<T: Element> {
    ptr: CUdeviceptr,
    len: usize,
    block: usize,
    gpu: Gpu,
    _values: PhantomData<T>,
}

/// Device `i32` indices: token ids, class targets.
pub type IndexBuffer = GpuBuffer<i32>;

impl<T: Element> GpuBuffer<T> {
    pub(crate) fn uninit(gpu: &Gpu, len: usize) -> Self {
        let (ptr, block) = if len == 0 {
            (0, 0)
        } else {
            gpu.inner.pool.alloc(len * std::mem::size_of::<T>())
        };
        GpuBuffer {
            ptr,
            len,
            block,
            gpu: gpu.clone(),
            _values: PhantomData,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device this buffer lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The raw device address, for kernel arguments.
    pub fn ptr(&self) -> CUdeviceptr {
        self.ptr
    }

    /// Sets every byte to zero (queued).
    pub fn fill_zero(&mut self) {
        if self.len == 0 {
            return;
        }
        self.gpu.bind();
        // SAFETY: the range lies inside the block owned by this buffer.
        unsafe {
            result::memset_d8_async(
                self.ptr,
                0,
                self.len * std::mem::size_of::<T>(),
                self.gpu.stream().cu_stream(),
            )
        }
        .unwrap_or_else(|e| panic!("cuda memset: {e:?}"));
    }

    /// Overwrites the buffer with host values; `values.len()` must equal `len()`.
    pub fn write_from(&mut self, values: &[T]) {
        assert_eq!(
            values.len(),
            self.len,
            "GpuBuffer::write_from: {} values into a buffer of {}",
            values.len(),
            self.len
        );
        if self.len == 0 {
            return;
        }
        self.gpu.bind();
        // Pageable host memory: the call returns once the values are staged, so `values`
        // may be dropped afterwards.
        // SAFETY: sizes checked above; the block is owned by this buffer.
        unsafe { result::memcpy_htod_async(self.ptr, values, self.gpu.stream().cu_stream()) }
            .unwrap_or_else(|e| panic!("cuda upload: {e:?}"));
    }

    /// Waits for queued work and copies the values to the host.
    pub fn to_vec(&self) -> Vec<T> {
        let mut out = vec![T::default(); self.len];
        if self.len == 0 {
            return out;
        }
        self.gpu.bind();
        // SAFETY: sizes match; the stream is synchronised before the host reads `out`.
        unsafe {
            result::memcpy_dtoh_async(&mut out, self.ptr, self.gpu.stream().cu_stream())
                .unwrap_or_else(|e| panic!("cuda download: {e:?}"));
        }
        self.gpu.synchronize();
        out
    }

    /// Copies `src` into this buffer on the device; lengths must agree.
    pub fn copy_from(&mut self, src: &GpuBuffer<T>) {
        assert_eq!(
            src.len, self.len,
            "GpuBuffer::copy_from: {} values into a buffer of {}",
            src.len, self.len
        );
        if self.len == 0 {
            return;
        }
        self.gpu.bind();
        // SAFETY: both blocks hold `len` values of `T`.
        unsafe {
            result::memcpy_dtod_async(
                self.ptr,
                src.ptr,
                self.len * std::mem::size_of::<T>(),
                self.gpu.stream().cu_stream(),
            )
        }
        .unwrap_or_else(|e| panic!("cuda copy: {e:?}"));
    }
}

impl<T: Element> GpuBuffer<T> {
    /// The same block viewed as another element type of the same size (f32 bits as `T = f32`
    /// when generic code knows the dtype only at run time). Panics if the sizes differ.
    pub(crate) fn retype<U: Element>(self) -> GpuBuffer<U> {
        assert_eq!(
            std::mem::size_of::<T>(),
            std::mem::size_of::<U>(),
            "GpuBuffer::retype: element sizes differ"
        );
        let me = std::mem::ManuallyDrop::new(self);
        GpuBuffer {
            ptr: me.ptr,
            len: me.len,
            block: me.block,
            // SAFETY: `me` is never dropped, so its `gpu` handle moves out exactly once.
            gpu: unsafe { std::ptr::read(&me.gpu) },
            _values: PhantomData,
        }
    }
}

impl<T: Element> Clone for GpuBuffer<T> {
    fn clone(&self) -> Self {
        let mut out = GpuBuffer::uninit(&self.gpu, self.len);
        out.copy_from(self);
        out
    }
}

impl<T: Element> Drop for GpuBuffer<T> {
    fn drop(&mut self) {
        if self.len > 0 {
            self.gpu.inner.pool.free(self.ptr, self.block);
        }
    }
}

impl<T: Element> std::fmt::Debug for GpuBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuBuffer(cuda:{}, {} values)",
            self.gpu.ordinal(),
            self.len
        )
    }
}
