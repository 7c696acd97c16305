//! The element types the kernels are instantiated for.

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

/// An element type of device buffers: which kernel instantiation and which GEMM to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `float`: kernels named `<op>_f32`, cuBLAS `Sgemm`.
    F32,
    /// `double`: kernels named `<op>_f64`, cuBLAS `Dgemm`.
    F64,
}

impl Dtype {
    /// The suffix of kernel names instantiated for this type.
    pub fn suffix(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

/// A value that can live in a device buffer: `f32`, `f64`, and `i32` for indices.
pub trait Element:
    Copy + Send + Sync + Default + PartialEq + std::fmt::Debug + DeviceRepr + ValidAsZeroBits + 'static
{
}

impl Element for f32 {}
impl Element for f64 {}
impl Element for i32 {}

/// A float type with device kernels: `f32` and `f64`.
pub trait GpuFloat: Element {
    /// Which kernel instantiation to launch.
    const GPU_DTYPE: Dtype;
}

impl GpuFloat for f32 {
    const GPU_DTYPE: Dtype = Dtype::F32;
}

impl GpuFloat for f64 {
    const GPU_DTYPE: Dtype = Dtype::F64;
}
