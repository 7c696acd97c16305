//! Errors from the outside world: a missing driver, a missing device, a failing CUDA library.

use std::fmt;

/// Why the GPU backend could not do what was asked.
///
/// Returned by everything that depends on the machine (opening a device, compiling the
/// kernels); programmer errors inside ops (shape mismatches) panic instead, as on the CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaError {
    /// `libcuda.so` could not be loaded: no NVIDIA driver on this machine.
    NoDriver,
    /// The driver loaded but has no device with the requested ordinal.
    NoDevice {
        /// The ordinal that was asked for.
        requested: usize,
        /// How many devices the driver reports.
        available: usize,
    },
    /// A CUDA library (`libnvrtc`, `libcublas`) could not be loaded.
    MissingLibrary(&'static str),
    /// A driver call failed.
    Driver(String),
    /// NVRTC rejected the kernel source (the log is included).
    Compile(String),
    /// A cuBLAS call failed.
    Cublas(String),
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::NoDriver => write!(
                f,
                "no CUDA driver found (libcuda.so could not be loaded; install the NVIDIA driver)"
            ),
            CudaError::NoDevice {
                requested,
                available: 0,
            } => write!(
                f,
                "no CUDA device (asked for cuda:{requested}, the driver reports none)"
            ),
            CudaError::NoDevice {
                requested,
                available,
            } => write!(
                f,
                "no CUDA device cuda:{requested} (the driver reports {available}: cuda:0..cuda:{})",
                available - 1
            ),
            CudaError::MissingLibrary(name) => write!(
                f,
                "the CUDA library {name} could not be loaded (install the CUDA 13 runtime \
                 libraries or add their folder to LD_LIBRARY_PATH)"
            ),
            CudaError::Driver(msg) => write!(f, "CUDA driver error: {msg}"),
            CudaError::Compile(msg) => write!(f, "NVRTC could not compile the kernels: {msg}"),
            CudaError::Cublas(msg) => write!(f, "cuBLAS error: {msg}"),
        }
    }
}

impl std::error::Error for CudaError {}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(format!("{e:?}"))
    }
}

impl From<cudarc::cublas::result::CublasError> for CudaError {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        CudaError::Cublas(format!("{e:?}"))
    }
}
