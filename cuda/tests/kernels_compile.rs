//! The kernel sources compile with NVRTC, for both dtypes and for every compute capability we
//! target (Turing to Blackwell, see `TARGETS`), to the CUBIN that `Gpu::open` loads and to the PTX it falls
//! back to. Needs only `libnvrtc`, no driver or device: runs wherever NVRTC can be loaded (e.g.
//! `pip install nvidia-cuda-nvrtc` and its `lib` folder on `LD_LIBRARY_PATH`), and says why
//! it skips elsewhere (fails instead with `DEQ_REQUIRE_GPU=1`).

use deq_cuda::harness::{gpu_required, run_or_skip};
use deq_cuda::module::{compile_cubin, compile_ptx};
use deq_cuda::{libraries, CudaError, Dtype};

/// Turing, Ampere (A100, consumer), Ada, Hopper (H100/H200), Blackwell (B200, consumer): every
/// architecture NVRTC 13, which this crate is built for, compiles to.
const TARGETS: [(i32, i32); 7] = [(7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)];

/// `Some(())` when NVRTC can be loaded; otherwise skips (or fails when a GPU is required).
fn nvrtc(test: &str) -> Option<()> {
    let present = libraries::nvrtc_version().map(|(major, minor)| {
        eprintln!("{test}: NVRTC {major}.{minor}");
    });
    run_or_skip(test, present, gpu_required())
}

fn fail(what: &str, cc: (i32, i32), dtype: Dtype, e: CudaError) -> String {
    format!("{what}{}{} {dtype:?}: {e}", cc.0, cc.1)
}

#[test]
fn kernels_compile_to_cubin_for_every_target() {
    if nvrtc("kernels_compile_to_cubin_for_every_target").is_none() {
        return;
    }
    let mut failures = Vec::new();
    for cc in TARGETS {
        for dtype in [Dtype::F32, Dtype::F64] {
            match compile_cubin(dtype, cc) {
                Ok(cubin) => {
                    if !cubin.starts_with(b"\x7fELF") {
                        failures.push(format!("sm_{}{} {dtype:?}: not an ELF image", cc.0, cc.1));
                    }
                }
                Err(e) => failures.push(fail("CUBIN sm_", cc, dtype, e)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn kernels_compile_to_ptx_for_every_target() {
    if nvrtc("kernels_compile_to_ptx_for_every_target").is_none() {
        return;
    }
    let mut failures = Vec::new();
    for cc in TARGETS {
        for dtype in [Dtype::F32, Dtype::F64] {
            match compile_ptx(dtype, cc) {
                Ok(ptx) => {
                    let text = ptx.to_src();
                    if !text.contains(".entry") || text.contains('\0') {
                        failures.push(format!("compute_{}{} {dtype:?}: bad PTX", cc.0, cc.1));
                    }
                }
                Err(e) => failures.push(fail("PTX compute_", cc, dtype, e)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
