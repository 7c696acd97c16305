//! Kernel launches: argument lists, grid shapes and the `Dims` struct shared with the kernels.

use crate::float::{Dtype, GpuFloat};
use crate::Gpu;
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

/// Most axes a strided kernel handles (`DEQ_MAX_DIMS` in common.cuh).
pub const MAX_DIMS: usize = 6;

/// Sizes and three stride sets of up to [`MAX_DIMS`] axes, laid out as `struct Dims` in
/// common.cuh so it can be passed to a kernel by value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Dims {
    /// Extent of each axis.
    pub size: [i64; MAX_DIMS],
    /// Strides (in elements) of operand a.
    pub stride_a: [i64; MAX_DIMS],
    /// Strides of operand b.
    pub stride_b: [i64; MAX_DIMS],
    /// Strides of operand c.
    pub stride_c: [i64; MAX_DIMS],
    /// Number of axes in use.
    pub ndim: i32,
}

// SAFETY: plain `repr(C)` data with the layout of the CUDA struct.
unsafe impl DeviceRepr for Dims {}

impl Dims {
    /// Dims over `size` with up to three stride sets (missing ones are zero). Panics beyond
    /// [`MAX_DIMS`] axes.
    pub fn new(size: &[usize], a: &[usize], b: &[usize], c: &[usize]) -> Dims {
        assert!(
            size.len() <= MAX_DIMS,
            "cuda: at most {MAX_DIMS} axes are supported, got shape {size:?}"
        );
        let mut d = Dims {
            ndim: size.len() as i32,
            ..Dims::default()
        };
        for (ax, &s) in size.iter().enumerate() {
            d.size[ax] = s as i64;
            d.stride_a[ax] = a.get(ax).copied().unwrap_or(0) as i64;
            d.stride_b[ax] = b.get(ax).copied().unwrap_or(0) as i64;
            d.stride_c[ax] = c.get(ax).copied().unwrap_or(0) as i64;
        }
        d
    }
}

/// One kernel argument, owned so that its address stays valid until the launch.
pub(crate) enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Dims(Box<Dims>),
}

impl Arg {
    /// A `real` scalar: `float` or `double` to match the kernel instantiation.
    pub(crate) fn real<T: GpuFloat>(v: f64) -> Arg {
        match T::GPU_DTYPE {
            Dtype::F32 => Arg::F32(v as f32),
            Dtype::F64 => Arg::F64(v),
        }
    }

    pub(crate) fn len(n: usize) -> Arg {
        Arg::I64(n as i64)
    }

    pub(crate) fn flag(b: bool) -> Arg {
        Arg::I32(b as i32)
    }
}

/// Threads per block of 1-D kernels.
pub(crate) const THREADS: u32 = 256;

/// A grid-stride launch covering `n` elements (capped: the loop covers the rest).
pub(crate) fn linear(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row, `threads` (a power of two, >= 32) per block.
pub(crate) fn rows(n_rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n_rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Threads for a row kernel over `cols` values: enough to cover short rows, at most 256.
pub(crate) fn row_threads(cols: usize) -> u32 {
    (cols.next_power_of_two().clamp(32, 256)) as u32
}

/// Queues kernel `name` (instantiated for `T`) with `args`. Panics if the launch is rejected,
/// which only a bug in this crate can cause.
pub(crate) fn launch<T: GpuFloat>(gpu: &Gpu, name: &'static str, cfg: LaunchConfig, args: &[Arg]) {
    if cfg.grid_dim.0 == 0 {
        return;
    }
    // The context must be current before the function lookup (cuModuleGetFunction), not only
    // for the launch: a thread's first CUDA call may be this one.
    gpu.bind();
    let func = gpu.function(name, T::GPU_DTYPE);
    let stream = gpu.stream();
    let mut builder = stream.launch_builder(&func);
    for a in args {
        match a {
            Arg::Ptr(v) => builder.arg(v),
            Arg::I32(v) => builder.arg(v),
            Arg::I64(v) => builder.arg(v),
            Arg::F32(v) => builder.arg(v),
            Arg::F64(v) => builder.arg(v),
            Arg::Dims(v) => builder.arg(&**v),
        };
    }
    // SAFETY: every kernel's parameter list matches the argument list its wrapper builds
    // (checked by the parity tests); buffers outlive the queued work because they are only
    // recycled through the pool, in stream order.
    unsafe { builder.launch(cfg) }
        .unwrap_or_else(|e| panic!("cuda: launching {name} failed: {e:?}"));
}
