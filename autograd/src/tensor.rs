//! `Tensor<T>`: an immutable, contiguous, row-major array with shared storage.

use crate::device::{Device, Storage};
use crate::float::Float;
use crate::rng::Rng;
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;

/// A tensor shape. Up to four dimensions live inline (no heap allocation).
pub type Shape = SmallVec<[usize; 4]>;

/// Builds a [`Shape`] from a slice.
pub fn shape_of(dims: &[usize]) -> Shape {
    Shape::from_slice(dims)
}

/// A dense tensor: contiguous row-major values behind shared storage.
///
/// Cloning is cheap (the storage is reference counted); values are never mutated in place
/// once shared, except through [`Tensor::data_mut`] which copies on write.
#[derive(Clone)]
pub struct Tensor<T: Float> {
    shape: Shape,
    storage: Arc<Storage<T>>,
}

impl<T: Float> Tensor<T> {
    /// Wraps `data` with the given shape. Panics if the lengths disagree (a programmer error).
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Self {
        let numel: usize = shape.iter().product();
        assert_eq!(
            data.len(),
            numel,
            "Tensor::from_vec: {} values for shape {:?} (needs {})",
            data.len(),
            shape,
            numel
        );
        Tensor {
            shape: shape_of(shape),
            storage: Arc::new(Storage::Cpu(crate::pool::PooledVec::new(data))),
        }
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::ZERO)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, T::ONE)
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: T) -> Self {
        let numel = shape.iter().product();
        let mut v = crate::pool::take(numel);
        v.fill(value);
        Self::from_vec(v, shape)
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar(value: T) -> Self {
        Self::from_vec(vec![value], &[])
    }

    /// Element `i` (row-major flat index) is `f(i)`.
    pub fn from_fn(shape: &[usize], f: impl FnMut(usize) -> T) -> Self {
        let numel = shape.iter().product();
        Self::from_vec((0..numel).map(f).collect(), shape)
    }

    /// Standard normal values scaled by `std`.
    pub fn randn(shape: &[usize], std: f64, rng: &mut Rng) -> Self {
        Self::from_fn(shape, |_| T::from_f64(rng.normal() * std))
    }

    /// Uniform values in `[lo, hi)`.
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> Self {
        Self::from_fn(shape, |_| T::from_f64(lo + (hi - lo) * rng.uniform()))
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.storage.len()
    }

    /// Size of dimension `axis`.
    pub fn dim(&self, axis: usize) -> usize {
        self.shape[axis]
    }

    /// Where the values live.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// The values, row-major.
    pub fn data(&self) -> &[T] {
        self.storage.as_slice()
    }

    /// Mutable values; copies the storage first if it is shared.
    pub fn data_mut(&mut self) -> &mut [T] {
        Arc::make_mut(&mut self.storage).as_mut_slice()
    }

    /// The values as an owned host vector (copies only when shared or on a device).
    pub fn into_vec(self) -> Vec<T> {
        match Arc::try_unwrap(self.storage) {
            Ok(storage) => storage.into_vec(),
            Err(shared) => shared.to_vec(),
        }
    }

    /// The values as a new host vector (downloaded from a device, waiting for queued work).
    pub fn to_vec(&self) -> Vec<T> {
        self.storage.to_vec()
    }

    /// The same values on `device` (shares the storage when already there). Errors when the
    /// device cannot be opened: no driver, no device, or a build without CUDA.
    pub fn to_device(&self, device: Device) -> Result<Self, crate::device::DeviceError> {
        if device == self.device() {
            return Ok(self.clone());
        }
        match device {
            Device::Cpu => Ok(Tensor::from_vec(self.to_vec(), self.shape())),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => {
                let gpu = deq_cuda::Gpu::open(n)
                    .map_err(|e| crate::device::DeviceError(e.to_string()))?;
                let host = self.to_vec();
                Ok(Tensor::from_gpu(gpu.upload(&host), self.shape()))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => device.open().map(|_| unreachable!()),
        }
    }

    /// Wraps a device buffer with the given shape. Panics if the lengths disagree.
    #[cfg(feature = "cuda")]
    pub fn from_gpu(buf: deq_cuda::GpuBuffer<T>, shape: &[usize]) -> Self {
        let numel: usize = shape.iter().product();
        assert_eq!(
            buf.len(),
            numel,
            "Tensor::from_gpu: {} values for shape {:?} (needs {})",
            buf.len(),
            shape,
            numel
        );
        Tensor {
            shape: shape_of(shape),
            storage: Arc::new(Storage::Cuda(buf)),
        }
    }

    /// The device buffer, when the values live on a CUDA device.
    #[cfg(feature = "cuda")]
    pub fn gpu(&self) -> Option<&deq_cuda::GpuBuffer<T>> {
        match &*self.storage {
            Storage::Cuda(b) => Some(b),
            Storage::Cpu(_) => None,
        }
    }

    /// The device buffer, moved out when this tensor is its only owner, copied otherwise.
    /// Panics for a cpu tensor.
    #[cfg(feature = "cuda")]
    pub fn into_gpu(self) -> deq_cuda::GpuBuffer<T> {
        let device = self.device();
        match Arc::try_unwrap(self.storage) {
            Ok(Storage::Cuda(b)) => b,
            Ok(Storage::Cpu(_)) => panic!("Tensor::into_gpu: the tensor is on {device}"),
            Err(shared) => match &*shared {
                Storage::Cuda(b) => b.clone(),
                Storage::Cpu(_) => panic!("Tensor::into_gpu: the tensor is on {device}"),
            },
        }
    }

    /// Zeros of `shape` on `device` (which must already be open).
    pub fn zeros_on(shape: &[usize], device: Device) -> Self {
        match device {
            Device::Cpu => Self::zeros(shape),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => {
                let gpu = deq_cuda::Gpu::open(n)
                    .unwrap_or_else(|e| panic!("Tensor::zeros_on(cuda:{n}): {e}"));
                Tensor::from_gpu(gpu.zeros(shape.iter().product()), shape)
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(n) => panic!("Tensor::zeros_on(cuda:{n}): built without CUDA"),
        }
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> T {
        assert_eq!(
            self.numel(),
            1,
            "Tensor::item: tensor of shape {:?} has {} elements",
            self.shape,
            self.numel()
        );
        self.to_vec()[0]
    }

    /// Same storage, new shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Self {
        let numel: usize = shape.iter().product();
        assert_eq!(
            numel,
            self.numel(),
            "reshape: cannot view shape {:?} as {:?}",
            self.shape(),
            shape
        );
        Tensor {
            shape: shape_of(shape),
            storage: self.storage.clone(),
        }
    }

    /// Converts to another float type.
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        let host = Tensor::from_vec(
            self.to_vec()
                .iter()
                .map(|&v| U::from_f64(v.to_f64()))
                .collect(),
            self.shape(),
        );
        host.to_device(self.device())
            .expect("cast: the source device is open")
    }

    /// Applies `f` to every value, giving a new tensor.
    pub fn map(&self, f: impl Fn(T) -> T + Sync + Send) -> Self {
        Tensor::from_vec(crate::kernels::map(self.data(), f), self.shape())
    }

    /// True when every value is finite.
    pub fn all_finite(&self) -> bool {
        self.host_values().iter().all(|v| v.is_finite())
    }

    /// Euclidean norm of all values (accumulated in f64).
    pub fn norm(&self) -> f64 {
        self.host_values()
            .iter()
            .map(|v| v.to_f64() * v.to_f64())
            .sum::<f64>()
            .sqrt()
    }

    /// Sum of element-wise products with `other` (accumulated in f64).
    pub fn dot(&self, other: &Self) -> f64 {
        assert_eq!(
            self.shape(),
            other.shape(),
            "dot: shapes {:?} and {:?} differ",
            self.shape(),
            other.shape()
        );
        self.host_values()
            .iter()
            .zip(other.host_values().iter())
            .map(|(a, b)| a.to_f64() * b.to_f64())
            .sum()
    }

    /// The values on the host: borrowed for cpu tensors, downloaded for device ones.
    pub fn host_values(&self) -> std::borrow::Cow<'_, [T]> {
        match self.device() {
            Device::Cpu => std::borrow::Cow::Borrowed(self.data()),
            _ => std::borrow::Cow::Owned(self.to_vec()),
        }
    }

    /// True when both tensors share the same storage allocation.
    pub fn shares_storage(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
}

impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<T> = self.host_values().iter().take(8).copied().collect();
        let device = match self.device() {
            Device::Cpu => String::new(),
            d => format!(" on {d}"),
        };
        write!(
            f,
            "Tensor<{}>{:?}{device} {:?}{}",
            T::DTYPE,
            self.shape(),
            shown,
            if self.numel() > 8 { " …" } else { "" }
        )
    }
}

impl<T: Float> PartialEq for Tensor<T> {
    fn eq(&self, other: &Self) -> bool {
        self.shape() == other.shape() && self.host_values() == other.host_values()
    }
}
