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
    /// The driver would not load the compiled kernels (neither the CUBIN nor the PTX
    /// fallback; both reasons are included).
    KernelLoad(String),
    /// A cuBLAS call failed.
    Cublas(String),
}

/// What a [`CudaError`] says about the machine: that it has no GPU to use, or that it has one
/// and something went wrong with it.
///
/// GPU tests skip on [`ErrorKind::Unavailable`] (a machine without a driver, a device or the
/// CUDA libraries still passes `cargo test`) and fail on [`ErrorKind::Fault`]: a kernel that
/// NVRTC cannot compile, a module the driver rejects, a cuBLAS handle that cannot be created.
/// See [`crate::harness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No driver, no device with that ordinal, or a CUDA library that cannot be loaded.
    Unavailable,
    /// A GPU is there, but compiling, loading or running on it failed.
    Fault,
}

impl CudaError {
    /// Whether this error means "no GPU to use here" or "the GPU failed".
    pub fn kind(&self) -> ErrorKind {
        match self {
            CudaError::NoDriver | CudaError::NoDevice { .. } | CudaError::MissingLibrary(_) => {
                ErrorKind::Unavailable
            }
            CudaError::Driver(_)
            | CudaError::Compile(_)
            | CudaError::KernelLoad(_)
            | CudaError::Cublas(_) => ErrorKind::Fault,
        }
    }
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
            CudaError::KernelLoad(msg) => {
                write!(f, "the CUDA driver rejected the compiled kernels: {msg}")
            }
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

#[cfg(test)]
mod tests {
    use super::{CudaError, ErrorKind};

    #[test]
    fn only_a_missing_driver_device_or_library_counts_as_unavailable() {
        let unavailable = [
            CudaError::NoDriver,
            CudaError::NoDevice {
                requested: 0,
                available: 0,
            },
            CudaError::NoDevice {
                requested: 3,
                available: 2,
            },
            CudaError::MissingLibrary("libnvrtc"),
            CudaError::MissingLibrary("libcublas"),
        ];
        for e in unavailable {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        }
        let faults = [
            CudaError::Driver("CUDA_ERROR_INVALID_PTX".into()),
            CudaError::Compile("error: identifier \"x\" is undefined".into()),
            CudaError::KernelLoad("CUDA_ERROR_UNSUPPORTED_PTX_VERSION".into()),
            CudaError::Cublas("CUBLAS_STATUS_NOT_INITIALIZED".into()),
        ];
        for e in faults {
            assert_eq!(e.kind(), ErrorKind::Fault, "{e}");
        }
    }
}
