//! GPU buffers, kernels and cuBLAS GEMM for `deq`, through cudarc with dynamic loading.
//!
//! Nothing here links against CUDA at build time: the driver, NVRTC and cuBLAS are loaded when a
//! device is first opened, so the crate builds and its tests run on machines without a GPU
//! (device tests then say why they skip; [`harness`] holds the rules). [`Gpu::open`] checks for
//! the driver before creating a context and returns a [`CudaError`] ("no CUDA driver found",
//! "no CUDA device") instead of panicking; [`CudaError::kind`] tells a machine without a GPU
//! from a GPU that failed.
//!
//! - [`Gpu`]: a device, its stream and cuBLAS handle, kernels compiled once per process by
//!   NVRTC for the device's compute capability, and a caching allocator ([`MemoryStats`]).
//! - [`GpuBuffer`]: typed device memory, returned to the cache on drop.
//! - [`ops`]: the kernels the autodiff engine needs, forward and backward; [`blas`]: GEMM and
//!   strided batched GEMM on row-major operands with transposes.
//!
//! This crate knows nothing of autodiff; `deq-autograd` puts these buffers behind its `Tensor`.

#![warn(missing_docs)]

pub mod blas;
mod buffer;
mod error;
mod float;
mod gpu;
pub mod harness;
pub mod launch;
pub mod libraries;
pub mod module;
pub mod ops;
mod pool;

pub use buffer::{GpuBuffer, IndexBuffer};
pub use error::{CudaError, ErrorKind};
pub use float::{Dtype, Element, GpuFloat};
pub use gpu::{device_count, driver_present, Gpu};
pub use pool::MemoryStats;
