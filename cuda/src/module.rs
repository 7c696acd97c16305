//! The kernels: CUDA C sources compiled once per process with NVRTC, one module per dtype.
//!
//! Every `.cu` file is written once against `real` (a `typedef`); the sources are compiled twice,
//! with `real = float` and `real = double`, for the device's own compute capability, so the
//! PTX the driver loads is exactly for this GPU. Functions are looked up by name on first
//! launch and cached.

use crate::error::CudaError;
use crate::float::Dtype;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The kernel sources, in compilation order (the common header first).
pub const SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("kernels/common.cuh")),
    ("elementwise.cu", include_str!("kernels/elementwise.cu")),
    ("broadcast.cu", include_str!("kernels/broadcast.cu")),
    ("reduce.cu", include_str!("kernels/reduce.cu")),
    ("strided.cu", include_str!("kernels/strided.cu")),
    ("softmax.cu", include_str!("kernels/softmax.cu")),
    ("layer_norm.cu", include_str!("kernels/layer_norm.cu")),
    ("cross_entropy.cu", include_str!("kernels/cross_entropy.cu")),
    ("mask.cu", include_str!("kernels/mask.cu")),
    ("embedding.cu", include_str!("kernels/embedding.cu")),
    ("linear.cu", include_str!("kernels/linear.cu")),
    ("conv1d.cu", include_str!("kernels/conv1d.cu")),
    ("solver.cu", include_str!("kernels/solver.cu")),
    ("optim.cu", include_str!("kernels/optim.cu")),
];

/// The full translation unit for one dtype.
pub fn source_for(dtype: Dtype) -> String {
    let real = match dtype {
        Dtype::F32 => "float",
        Dtype::F64 => "double",
    };
    let mut src = format!(
        "typedef {real} real;\n#define DEQ_REAL_IS_{}\n",
        dtype.suffix()
    );
    for (name, text) in SOURCES {
        src.push_str(&format!("// ---- {name}\n{text}\n"));
    }
    src
}

/// Compiles the kernels for `dtype` to PTX for the virtual architecture `compute_XY`.
///
/// Needs only `libnvrtc` (no driver, no device), so tests can check the sources on any
/// machine that has NVRTC.
pub fn compile_ptx(dtype: Dtype, compute_capability: (i32, i32)) -> Result<Ptx, CudaError> {
    // SAFETY: only a dlopen check.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::MissingLibrary("libnvrtc"));
    }
    let (major, minor) = compute_capability;
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            "--std=c++17".into(),
        ],
        name: Some(format!("deq_kernels_{}.cu", dtype.suffix())),
        ..Default::default()
    };
    compile_ptx_with_opts(source_for(dtype), opts).map_err(|e| match e {
        CompileError::CompileError { log, .. } => {
            CudaError::Compile(log.to_string_lossy().into_owned())
        }
        other => CudaError::Compile(format!("{other:?}")),
    })
}

pub(crate) struct Kernels {
    modules: [Arc<CudaModule>; 2],
    functions: Mutex<HashMap<(&'static str, Dtype), CudaFunction>>,
}

impl Kernels {
    pub(crate) fn compile(
        ctx: &Arc<CudaContext>,
        compute_capability: (i32, i32),
    ) -> Result<Kernels, CudaError> {
        let f32_module = ctx.load_module(compile_ptx(Dtype::F32, compute_capability)?)?;
        let f64_module = ctx.load_module(compile_ptx(Dtype::F64, compute_capability)?)?;
        Ok(Kernels {
            modules: [f32_module, f64_module],
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// The kernel `name` of the module for `dtype`. Panics if no such kernel exists (a bug in
    /// this crate, caught by the parity tests).
    pub(crate) fn function(&self, name: &'static str, dtype: Dtype) -> CudaFunction {
        let mut cache = self.functions.lock().expect("kernel cache lock");
        cache
            .entry((name, dtype))
            .or_insert_with(|| {
                let module = match dtype {
                    Dtype::F32 => &self.modules[0],
                    Dtype::F64 => &self.modules[1],
                };
                module
                    .load_function(name)
                    .unwrap_or_else(|e| panic!("kernel {name} not found: {e:?}"))
            })
            .clone()
    }
}
