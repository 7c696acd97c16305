//! The kernel sources compile with NVRTC, for both dtypes and for every compute capability we
//! target (Turing to Hopper). Needs only `libnvrtc`, no driver or device: runs wherever NVRTC
//! can be loaded (e.g. `pip install nvidia-cuda-nvrtc` and its `lib` folder on
//! `LD_LIBRARY_PATH`), and says why it skips elsewhere.

use deq_cuda::module::compile_ptx;
use deq_cuda::{CudaError, Dtype};

#[test]
fn kernels_compile_for_every_target() {
    for cc in [(7, 5), (8, 0), (8, 6), (9, 0)] {
        for dtype in [Dtype::F32, Dtype::F64] {
            match compile_ptx(dtype, cc) {
                Ok(ptx) => assert!(ptx.to_src().contains(".entry"), "no kernels in the PTX"),
                Err(CudaError::MissingLibrary(lib)) => {
                    eprintln!("skipped: {lib} cannot be loaded on this machine");
                    return;
                }
                Err(e) => panic!("compute_{}{} {dtype:?}: {e}", cc.0, cc.1),
            }
        }
    }
}
