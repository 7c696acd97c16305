//! One CUDA device: its context, stream, cuBLAS handle, compiled kernels and memory pool.

use crate::error::CudaError;
use crate::float::{Dtype, Element};
use crate::module::{KernelImage, Kernels};
use crate::pool::{MemoryStats, Pool};
use crate::GpuBuffer;
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result, CudaContext, CudaFunction, CudaStream};
use std::sync::{Arc, Mutex, OnceLock};

/// A cuBLAS handle; cuBLAS handles may be used from any thread, one call at a time.
pub(crate) struct BlasHandle(pub(crate) blas_sys::cublasHandle_t);

// SAFETY: the handle is only used under the `Mutex` in `GpuInner`.
unsafe impl Send for BlasHandle {}

impl Drop for BlasHandle {
    fn drop(&mut self) {
        // SAFETY: created by `create_handle` and destroyed once.
        unsafe {
            let _ = blas::destroy_handle(self.0);
        }
    }
}

pub(crate) struct GpuInner {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: Mutex<BlasHandle>,
    pub(crate) kernels: Kernels,
    pub(crate) pool: Pool,
    name: String,
    compute_capability: (i32, i32),
}

/// A handle to one CUDA device. Cheap to clone; every clone refers to the same device state.
///
/// Open one with [`Gpu::open`]. All work is queued on one stream, in order; only downloads
/// ([`GpuBuffer::to_vec`]) and [`Gpu::synchronize`] wait for the device.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu(cuda:{}, {})", self.ordinal(), self.inner.name)
    }
}

impl PartialEq for Gpu {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Devices opened so far, one handle per ordinal for the whole process.
fn registry() -> &'static Mutex<Vec<Option<Gpu>>> {
    static REGISTRY: OnceLock<Mutex<Vec<Option<Gpu>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

/// True when the NVIDIA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices, or why there are none.
pub fn device_count() -> Result<usize, CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    match result::init() {
        Ok(()) => {}
        // A driver without any visible device (e.g. CUDA_VISIBLE_DEVICES="") fails cuInit.
        Err(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => return Ok(0),
        Err(e) => return Err(e.into()),
    }
    Ok(result::device::get_count()?.max(0) as usize)
}

impl Gpu {
    /// Opens device `ordinal` (once per process; later calls return the same handle) and
    /// compiles the kernels for its compute capability with NVRTC (to a CUBIN for its `sm_XY`,
    /// see [`crate::module`]).
    ///
    /// Errors, never panics: [`crate::ErrorKind::Unavailable`] when there is no driver, no such
    /// device, or a CUDA library is missing ("no CUDA driver found", "no CUDA device", ...);
    /// [`crate::ErrorKind::Fault`] when the GPU is there but the kernels do not compile or load,
    /// or cuBLAS does not start.
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        let mut reg = registry().lock().expect("device registry lock");
        if let Some(Some(gpu)) = reg.get(ordinal) {
            gpu.inner.ctx.bind_to_thread()?;
            return Ok(gpu.clone());
        }
        let available = device_count()?;
        if ordinal >= available {
            return Err(CudaError::NoDevice {
                requested: ordinal,
                available,
            });
        }
        // SAFETY: only dlopen checks.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(CudaError::MissingLibrary("libnvrtc"));
        }
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(CudaError::MissingLibrary("libcublas"));
        }
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.default_stream();
        let name = ctx.name()?;
        let compute_capability = ctx.compute_capability()?;
        let handle = BlasHandle(blas::create_handle()?);
        // SAFETY: the handle is fresh; the stream outlives it (both owned by `GpuInner`).
        unsafe { blas::set_stream(handle.0, stream.cu_stream() as blas_sys::cudaStream_t) }?;
        let kernels = Kernels::compile(&ctx, compute_capability)?;
        let gpu = Gpu {
            inner: Arc::new(GpuInner {
                pool: Pool::new(ctx.clone()),
                ctx,
                stream,
                blas: Mutex::new(handle),
                kernels,
                name,
                compute_capability,
            }),
        };
        if reg.len() <= ordinal {
            reg.resize(ordinal + 1, None);
        }
        reg[ordinal] = Some(gpu.clone());
        Ok(gpu)
    }

    /// The device ordinal (`N` in `cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.inner.ctx.ordinal()
    }

    /// The device's name, e.g. "NVIDIA H200".
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The compute capability the kernels were compiled for.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.compute_capability
    }

    /// How the f32 and f64 kernel modules were built and loaded (a CUBIN for the device's
    /// `sm_XY`, or the PTX fallback and why).
    pub fn kernel_images(&self) -> &[KernelImage; 2] {
        self.inner.kernels.images()
    }

    /// Waits until every queued kernel and copy has finished; panics on an asynchronous
    /// kernel fault (a bug in a kernel, not an input error).
    pub fn synchronize(&self) {
        self.bind();
        self.inner
            .stream
            .synchronize()
            .unwrap_or_else(|e| panic!("cuda:{}: kernel failed: {e:?}", self.ordinal()));
    }

    /// Byte counts of the caching allocator.
    pub fn memory_stats(&self) -> MemoryStats {
        self.inner.pool.stats()
    }

    /// Starts a new peak-memory measurement at the current live bytes.
    pub fn reset_peak(&self) {
        self.inner.pool.reset_peak()
    }

    /// Returns cached blocks to the driver (for measurements and for other processes).
    pub fn empty_cache(&self) {
        self.inner.pool.empty_cache()
    }

    /// An uninitialised buffer of `len` elements.
    pub fn alloc<T: Element>(&self, len: usize) -> GpuBuffer<T> {
        GpuBuffer::uninit(self, len)
    }

    /// A buffer of `len` zeros.
    pub fn zeros<T: Element>(&self, len: usize) -> GpuBuffer<T> {
        let mut buf = GpuBuffer::uninit(self, len);
        buf.fill_zero();
        buf
    }

    /// Copies host values to a new device buffer.
    pub fn upload<T: Element>(&self, values: &[T]) -> GpuBuffer<T> {
        let mut buf = GpuBuffer::uninit(self, values.len());
        buf.write_from(values);
        buf
    }

    pub(crate) fn bind(&self) {
        self.inner
            .ctx
            .bind_to_thread()
            .unwrap_or_else(|e| panic!("cuda:{}: cannot bind context: {e:?}", self.ordinal()));
    }

    pub(crate) fn function(&self, name: &'static str, dtype: Dtype) -> CudaFunction {
        self.inner.kernels.function(name, dtype)
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }
}
