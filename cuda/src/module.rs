//! The kernels: CUDA C sources compiled once per process with NVRTC, one module per dtype.
//!
//! Every `.cu` file is written once against `real` (a `typedef`); the sources are compiled twice,
//! with `real = float` and `real = double`, to a CUBIN for the device's own `sm_XY`, so the
//! driver loads machine code and never JIT-compiles PTX: a PTX written by an NVRTC newer than
//! the driver would fail to load (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`), a CUBIN does not. Only
//! when the CUBIN cannot be built or loaded is PTX for `compute_XY` tried, and the reason is
//! kept ([`KernelImage::Ptx`]) for the device report. Functions are looked up by name on first
//! launch and cached.

use crate::error::CudaError;
use crate::float::Dtype;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys, Ptx};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fmt;
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
    ("rel_shift.cu", include_str!("kernels/rel_shift.cu")),
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

/// What NVRTC is asked to produce.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Machine code for the real architecture `sm_XY`.
    Cubin,
    /// PTX for the virtual architecture `compute_XY`.
    Ptx,
}

/// Why NVRTC produced nothing.
enum NvrtcFailure {
    /// The source did not compile (NVRTC's log): the same source fails for any target.
    Source(String),
    /// Anything else: an architecture this NVRTC does not know, a failing NVRTC call.
    Other(String),
}

impl From<NvrtcFailure> for CudaError {
    fn from(f: NvrtcFailure) -> Self {
        match f {
            NvrtcFailure::Source(log) | NvrtcFailure::Other(log) => CudaError::Compile(log),
        }
    }
}

/// An `nvrtcProgram`, destroyed on drop.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by `create_program` and destroyed once, here.
        unsafe {
            let _ = nvrtc::destroy_program(self.0);
        }
    }
}

fn nvrtc_present() -> Result<(), CudaError> {
    // SAFETY: only a dlopen check.
    if unsafe { nvrtc_sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::MissingLibrary("libnvrtc"))
    }
}

/// The NVRTC option selecting the target of `output` for `compute_capability`.
fn arch_option(output: Output, compute_capability: (i32, i32)) -> String {
    let (major, minor) = compute_capability;
    let kind = match output {
        Output::Cubin => "sm",
        Output::Ptx => "compute",
    };
    format!("--gpu-architecture={kind}_{major}{minor}")
}

/// Compiles the kernels for `dtype` and returns NVRTC's output (CUBIN bytes, or PTX text with
/// its terminating NUL).
fn nvrtc_compile(
    dtype: Dtype,
    compute_capability: (i32, i32),
    output: Output,
) -> Result<Vec<u8>, NvrtcFailure> {
    let other = |what: &str, e: nvrtc::NvrtcError| NvrtcFailure::Other(format!("{what}: {e:?}"));
    let src = CString::new(source_for(dtype)).expect("the kernel sources contain no NUL");
    let name = CString::new(format!("deq_kernels_{}.cu", dtype.suffix())).expect("no NUL");
    // Declared after `src` and `name`, so dropped before them (NVRTC may refer to both).
    let prog = Program(
        nvrtc::create_program(&src, Some(&name)).map_err(|e| other("nvrtcCreateProgram", e))?,
    );
    let options = [
        arch_option(output, compute_capability),
        "--std=c++17".to_string(),
    ];
    // SAFETY: `prog` is a live program.
    if let Err(e) = unsafe { nvrtc::compile_program(prog.0, &options) } {
        // SAFETY: as above.
        let log = unsafe { nvrtc::get_program_log(prog.0) }
            .map(|raw| {
                // SAFETY: NVRTC's log is NUL-terminated.
                unsafe { CStr::from_ptr(raw.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let msg = format!("{e:?} with {}: {log}", options.join(" "));
        return Err(if e.0 == nvrtc_sys::nvrtcResult::NVRTC_ERROR_COMPILATION {
            NvrtcFailure::Source(msg)
        } else {
            NvrtcFailure::Other(msg)
        });
    }
    match output {
        Output::Ptx => {
            // SAFETY: compiled above.
            let ptx = unsafe { nvrtc::get_ptx(prog.0) }.map_err(|e| other("nvrtcGetPTX", e))?;
            Ok(ptx.into_iter().map(|c| c as u8).collect())
        }
        Output::Cubin => {
            let mut size = 0usize;
            // SAFETY: compiled above; `size` is a valid out-pointer.
            unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog.0, &mut size) }
                .result()
                .map_err(|e| other("nvrtcGetCUBINSize", e))?;
            let mut cubin = vec![0u8; size];
            // SAFETY: `cubin` holds the `size` bytes NVRTC writes.
            unsafe { nvrtc_sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast()) }
                .result()
                .map_err(|e| other("nvrtcGetCUBIN", e))?;
            if size == 0 {
                return Err(NvrtcFailure::Other("NVRTC returned an empty CUBIN".into()));
            }
            Ok(cubin)
        }
    }
}

/// Compiles the kernels for `dtype` to PTX for the virtual architecture `compute_XY` (the
/// fallback when no CUBIN can be built or loaded).
///
/// Needs only `libnvrtc` (no driver, no device), so tests can check the sources on any
/// machine that has NVRTC.
pub fn compile_ptx(dtype: Dtype, compute_capability: (i32, i32)) -> Result<Ptx, CudaError> {
    nvrtc_present()?;
    let mut text = nvrtc_compile(dtype, compute_capability, Output::Ptx)?;
    while text.last() == Some(&0) {
        text.pop();
    }
    let text = String::from_utf8(text)
        .map_err(|_| CudaError::Compile("NVRTC wrote PTX that is not UTF-8".into()))?;
    Ok(Ptx::from_src(text))
}

/// Compiles the kernels for `dtype` to a CUBIN (an ELF image of machine code) for the real
/// architecture `sm_XY`: what [`crate::Gpu::open`] loads.
///
/// Needs only `libnvrtc` (no driver, no device).
pub fn compile_cubin(dtype: Dtype, compute_capability: (i32, i32)) -> Result<Vec<u8>, CudaError> {
    nvrtc_present()?;
    Ok(nvrtc_compile(dtype, compute_capability, Output::Cubin)?)
}

/// How the kernels of one dtype were built and loaded on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelImage {
    /// Machine code for exactly the device's `sm_XY` (the normal case).
    Cubin {
        /// The compute capability compiled for.
        arch: (i32, i32),
    },
    /// PTX for `compute_XY`, compiled by the driver, because the CUBIN failed.
    Ptx {
        /// The compute capability compiled for.
        arch: (i32, i32),
        /// Why the CUBIN could not be built or loaded.
        cubin_error: String,
    },
}

impl fmt::Display for KernelImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelImage::Cubin { arch: (a, b) } => write!(f, "CUBIN sm_{a}{b}"),
            KernelImage::Ptx {
                arch: (a, b),
                cubin_error,
            } => write!(f, "PTX compute_{a}{b} (the CUBIN failed: {cubin_error})"),
        }
    }
}

/// Builds and loads the module for `dtype`: the CUBIN, else the PTX. A source that does not
/// compile is reported at once (PTX would fail the same way); anything else about the CUBIN
/// (an architecture NVRTC does not know, a driver that rejects it) falls back to PTX, and when
/// that fails too the error gives both reasons.
fn load(
    ctx: &Arc<CudaContext>,
    dtype: Dtype,
    compute_capability: (i32, i32),
) -> Result<(Arc<CudaModule>, KernelImage), CudaError> {
    nvrtc_present()?;
    let cubin_error = match nvrtc_compile(dtype, compute_capability, Output::Cubin) {
        Err(NvrtcFailure::Source(log)) => return Err(CudaError::Compile(log)),
        Err(NvrtcFailure::Other(msg)) => format!("NVRTC: {msg}"),
        Ok(cubin) => match ctx.load_module(Ptx::from_binary(cubin)) {
            Ok(module) => {
                let image = KernelImage::Cubin {
                    arch: compute_capability,
                };
                return Ok((module, image));
            }
            Err(e) => format!("cuModuleLoadData: {e:?}"),
        },
    };
    let ptx = compile_ptx(dtype, compute_capability)
        .map_err(|e| CudaError::KernelLoad(format!("CUBIN: {cubin_error}; PTX: {e}")))?;
    let module = ctx.load_module(ptx).map_err(|e| {
        CudaError::KernelLoad(format!(
            "CUBIN: {cubin_error}; PTX: cuModuleLoadData: {e:?}"
        ))
    })?;
    let image = KernelImage::Ptx {
        arch: compute_capability,
        cubin_error,
    };
    Ok((module, image))
}

pub(crate) struct Kernels {
    modules: [Arc<CudaModule>; 2],
    images: [KernelImage; 2],
    functions: Mutex<HashMap<(&'static str, Dtype), CudaFunction>>,
}

impl Kernels {
    pub(crate) fn compile(
        ctx: &Arc<CudaContext>,
        compute_capability: (i32, i32),
    ) -> Result<Kernels, CudaError> {
        let (f32_module, f32_image) = load(ctx, Dtype::F32, compute_capability)?;
        let (f64_module, f64_image) = load(ctx, Dtype::F64, compute_capability)?;
        Ok(Kernels {
            modules: [f32_module, f64_module],
            images: [f32_image, f64_image],
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// How the f32 and f64 modules were built.
    pub(crate) fn images(&self) -> &[KernelImage; 2] {
        &self.images
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

#[cfg(test)]
mod tests {
    use super::{arch_option, KernelImage, Output};

    #[test]
    fn cubins_target_the_real_architecture_and_ptx_the_virtual_one() {
        assert_eq!(
            arch_option(Output::Cubin, (9, 0)),
            "--gpu-architecture=sm_90"
        );
        assert_eq!(
            arch_option(Output::Ptx, (8, 6)),
            "--gpu-architecture=compute_86"
        );
        assert_eq!(
            KernelImage::Cubin { arch: (9, 0) }.to_string(),
            "CUBIN sm_90"
        );
        let ptx = KernelImage::Ptx {
            arch: (12, 0),
            cubin_error: "x".into(),
        };
        assert_eq!(ptx.to_string(), "PTX compute_120 (the CUBIN failed: x)");
    }
}
