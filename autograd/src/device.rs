//! Where tensor values live: the backend seam.
//!
//! A [`Tensor`](crate::Tensor) holds its values in host memory ([`Device::Cpu`]) or, with the
//! `cuda` feature, in a `deq_cuda::GpuBuffer` on [`Device::Cuda`]. Every op dispatches on the
//! storage of its operands, so models and solvers written against `Var` run on either device.
//! Operands of one op must live on the same device (mixing them is a programmer error and
//! panics with the op name).

use crate::float::Float;
use std::fmt;

/// A compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory; ops run on faer (matmul) and rayon.
    #[default]
    Cpu,
    /// CUDA device `n`; ops run as NVRTC-compiled kernels and cuBLAS.
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Why a device cannot be used: a bad name, no driver, no device, a build without CUDA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceError(pub String);

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeviceError {}

impl std::str::FromStr for Device {
    type Err = DeviceError;

    /// Parses `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    DeviceError(format!(
                        "unknown device {s:?}: expected cpu, cuda or cuda:N"
                    ))
                }),
        }
    }
}

impl Device {
    /// Checks that the device can be used here, opening it (and compiling the kernels) on first
    /// use. `Cpu` always can; `Cuda(n)` fails with "no CUDA driver found", "no CUDA device", or
    /// "built without the `cuda` feature".
    pub fn open(self) -> Result<(), DeviceError> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => deq_cuda::Gpu::open(n)
                .map(|_| ())
                .map_err(|e| DeviceError(e.to_string())),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(DeviceError(
                "this build of deq has no CUDA support (built without the `cuda` feature)".into(),
            )),
        }
    }

    /// Waits for every queued kernel on this device (a no-op on the CPU). Timers around GPU
    /// work call this before reading the clock.
    pub fn synchronize(self) {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(n) = self {
            if let Ok(g) = deq_cuda::Gpu::open(n) {
                g.synchronize();
            }
        }
    }

    /// `(live, peak)` bytes of the device's caching allocator since the last
    /// [`Device::reset_peak_memory`]; `None` on the CPU (use a counting allocator there).
    pub fn memory(self) -> Option<(usize, usize)> {
        match self {
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => deq_cuda::Gpu::open(n).ok().map(|g| {
                let m = g.memory_stats();
                (m.live_bytes, m.peak_bytes)
            }),
            _ => None,
        }
    }

    /// Starts a new peak-memory measurement on a device (no-op on the CPU).
    pub fn reset_peak_memory(self) {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(n) = self {
            if let Ok(g) = deq_cuda::Gpu::open(n) {
                g.reset_peak();
            }
        }
    }

    /// A one-line description: "cpu", or "cuda:0 (NVIDIA H200, compute 9.0)".
    pub fn describe(self) -> String {
        match self {
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => match deq_cuda::Gpu::open(n) {
                Ok(g) => {
                    let (major, minor) = g.compute_capability();
                    format!("cuda:{n} ({}, compute {major}.{minor})", g.name())
                }
                Err(e) => format!("cuda:{n} (unavailable: {e})"),
            },
            other => other.to_string(),
        }
    }
}

/// The element types a device buffer can hold: with the `cuda` feature, the types the kernels
/// are instantiated for; without it, any type.
#[cfg(feature = "cuda")]
pub trait DeviceScalar: deq_cuda::GpuFloat {}
#[cfg(feature = "cuda")]
impl<T: deq_cuda::GpuFloat> DeviceScalar for T {}

/// The element types a device buffer can hold (no device backends in this build).
#[cfg(not(feature = "cuda"))]
pub trait DeviceScalar {}
#[cfg(not(feature = "cuda"))]
impl<T> DeviceScalar for T {}

/// The buffer behind a tensor.
#[derive(Clone)]
pub(crate) enum Storage<T: Float> {
    /// A host vector (back to the CPU pool when dropped).
    Cpu(crate::pool::PooledVec<T>),
    /// A device buffer.
    #[cfg(feature = "cuda")]
    Cuda(deq_cuda::GpuBuffer<T>),
}

impl<T: Float> Storage<T> {
    pub(crate) fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => Device::Cuda(b.gpu().ordinal()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.len(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => b.len(),
        }
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Storage::Cpu(v) => v,
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => on_device_panic("data", b.gpu().ordinal()),
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Storage::Cpu(v) => v,
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => on_device_panic("data_mut", b.gpu().ordinal()),
        }
    }

    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            Storage::Cpu(v) => v.into_vec(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => b.to_vec(),
        }
    }

    pub(crate) fn to_vec(&self) -> Vec<T> {
        match self {
            Storage::Cpu(v) => v.to_vec(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(b) => b.to_vec(),
        }
    }
}

#[cfg(feature = "cuda")]
fn on_device_panic(what: &str, n: usize) -> ! {
    panic!(
        "Tensor::{what}: the values live on cuda:{n}; host slices exist only for cpu tensors \
         (use to_vec() or to_device(Device::Cpu))"
    )
}

/// The device all `operands` of `op` live on; panics (naming the op and the devices) when they
/// differ, like a shape mismatch.
pub(crate) fn common_device<T: Float>(op: &str, operands: &[&crate::Tensor<T>]) -> Device {
    common_device_of(op, operands.iter().copied())
}

/// [`common_device`] of any sequence of operands (the values of an op's `Var` inputs).
pub(crate) fn common_device_of<'a, T: Float>(
    op: &str,
    operands: impl IntoIterator<Item = &'a crate::Tensor<T>>,
) -> Device {
    let mut operands = operands.into_iter();
    let first = operands.next().map_or(Device::Cpu, |t| t.device());
    for t in operands {
        assert_eq!(
            t.device(),
            first,
            "{op}: operands on {first} and {} (move them to one device with to_device)",
            t.device()
        );
    }
    first
}

/// The device buffer of a tensor that an op has established to be on a CUDA device.
#[cfg(feature = "cuda")]
pub(crate) fn buf<'a, T: Float>(op: &str, t: &'a crate::Tensor<T>) -> &'a deq_cuda::GpuBuffer<T> {
    t.gpu()
        .unwrap_or_else(|| panic!("{op}: expected a cuda tensor, got one on {}", t.device()))
}

// The dispatch seam of the ops. An op file (`crate::ops::*`) holds the `Var` method, the shape
// checks and the backward rule; it picks its kernel with one `match` on the device, naming the
// CUDA kernel (`crate::cuda::*`) through the macros below, so that the op file itself needs no
// `#[cfg(feature = "cuda")]`: without the feature the CUDA tokens are dropped before name
// resolution.

/// The CUDA arm of an op's device dispatch: `Device::Cuda(_) => on_cuda!(kernel(...))`.
/// Without the `cuda` feature no tensor lives on a CUDA device, and the arm is unreachable.
#[cfg(feature = "cuda")]
macro_rules! on_cuda {
    ($e:expr) => {
        $e
    };
}

/// The CUDA arm of an op's device dispatch (this build has none, so it is unreachable).
#[cfg(not(feature = "cuda"))]
macro_rules! on_cuda {
    ($($t:tt)*) => {
        unreachable!("a CUDA tensor in a build without the `cuda` feature")
    };
}

/// The `vjp_gpu` method of a [`Backward`](crate::Backward) impl, written as a closure over the
/// recorded op, the input index, the cotangent, the gradient buffer and the accumulate flag:
/// `cuda_vjp!(|op, k, g, dst, acc| crate::cuda::x::backward(g, op.d, dst, acc));`. Compiled
/// only with the `cuda` feature (the trait method exists only there).
#[cfg(feature = "cuda")]
macro_rules! cuda_vjp {
    (|$op:ident, $k:ident, $g:ident, $dst:ident, $acc:ident| $body:expr) => {
        fn vjp_gpu(
            &self,
            $k: usize,
            $g: &deq_cuda::GpuBuffer<T>,
            $dst: &mut deq_cuda::GpuBuffer<T>,
            $acc: bool,
        ) {
            let $op = self;
            $body
        }
    };
}

/// The `vjp_gpu` method of a [`Backward`](crate::Backward) impl (nothing in this build).
#[cfg(not(feature = "cuda"))]
macro_rules! cuda_vjp {
    ($($t:tt)*) => {};
}

/// A type that exists only with the `cuda` feature (a device buffer kept for a VJP), for the
/// device half of a [`Kept`]; `()` without the feature, where no value of it is made.
#[cfg(feature = "cuda")]
macro_rules! cuda_type {
    ($t:ty) => {
        $t
    };
}

/// A type that exists only with the `cuda` feature (`()` in this build).
#[cfg(not(feature = "cuda"))]
macro_rules! cuda_type {
    ($t:ty) => {
        ()
    };
}

pub(crate) use {cuda_type, cuda_vjp, on_cuda};

/// What a recording keeps for its VJP, in the form of the device that ran its forward pass:
/// `H` on the host, `D` (a [`cuda_type!`]) on a CUDA device. A VJP runs on the device of its
/// recording, so each half reads only its own form.
pub(crate) enum Kept<H, D> {
    /// Kept by a forward pass on the host.
    Host(H),
    /// Kept by a forward pass on a CUDA device.
    #[cfg(feature = "cuda")]
    Cuda(D),
    /// Stands in for the device half in a build without CUDA (no value of it exists).
    #[cfg(not(feature = "cuda"))]
    #[doc(hidden)]
    _NoCuda(std::convert::Infallible, std::marker::PhantomData<D>),
}

impl<H, D> Kept<H, D> {
    /// The host form; panics (naming `op`) for a recording made on a device.
    pub(crate) fn host(&self, op: &str) -> &H {
        match self {
            Kept::Host(h) => h,
            _ => panic!("{op}: recorded on a CUDA device, differentiated on the host"),
        }
    }

    /// The device form; panics (naming `op`) for a recording made on the host.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda(&self, op: &str) -> &D {
        match self {
            Kept::Cuda(d) => d,
            Kept::Host(_) => panic!("{op}: recorded on the host, differentiated on a CUDA device"),
        }
    }
}
