//! Where tensor values live: the backend seam.
//!
//! Only the CPU backend exists today. The CUDA backend (crate `deq-cuda`, cargo feature `cuda`)
//! adds a `Cuda(n)` device and a device-buffer storage variant here; every op dispatches on the
//! storage of its operands, so models and solvers do not change.

use crate::float::Float;

/// A compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory; ops run on faer (matmul) and rayon.
    #[default]
    Cpu,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}

/// The buffer behind a tensor.
#[derive(Clone)]
pub(crate) enum Storage<T: Float> {
    /// A host vector.
    Cpu(Vec<T>),
}

impl<T: Float> Storage<T> {
    pub(crate) fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Storage::Cpu(v) => v,
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Storage::Cpu(v) => v,
        }
    }

    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            Storage::Cpu(v) => v,
        }
    }
}
