//! GPU-vs-CPU parity harness shared by the `gpu_parity_*` tests.
//!
//! Each case runs an op forward and its VJP (all inputs, a random cotangent) on the CPU and on
//! `cuda:0`, and compares outputs and gradients with `deq_cuda::harness::compare`: max |gpu −
//! cpu| / max |cpu| over the finite entries must stay below 1e-5 in f32 and 1e-12 in f64 (the
//! error is measured against each tensor's scale, because GPU reductions sum in a different
//! order), and a NaN or infinity on one side only is a mismatch (equal infinities, like a
//! masked `-inf`, match). A run collects every failing case before it fails, so one run on a
//! GPU machine reports all of them. The tests skip, saying why, only when this machine has no
//! GPU to use (no driver, no device, no CUDA library), never with `DEQ_REQUIRE_GPU=1`; any
//! other failure to open the device fails them (`deq_cuda::harness`).

#![allow(dead_code)]

use deq_autograd::{Device, Float, Rng, Tape, Tensor, Var};

/// `cuda:0` if it can be opened here; `None` after printing why the caller skips. Panics (the
/// test fails) when the GPU is there but does not open, or is missing with `DEQ_REQUIRE_GPU=1`.
pub fn device(test: &str) -> Option<Device> {
    let gpu = deq_cuda::harness::test_gpu(test)?;
    let dev = Device::Cuda(gpu.ordinal());
    dev.open().expect("cuda:0 opened once already opens again");
    Some(dev)
}

/// Relative tolerance for `T`: 1e-5 for f32, 1e-12 for f64.
pub fn tolerance<T: Float>() -> f64 {
    if std::mem::size_of::<T>() == 4 {
        1e-5
    } else {
        1e-12
    }
}

/// `deq_cuda::harness::compare` of the GPU's `got` with the CPU's `want` at the tolerance of
/// `T`: the scaled error, or what mismatched.
pub fn compare<T: Float>(got: &[T], want: &[T]) -> Result<f64, String> {
    let f64s = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<_>>();
    deq_cuda::harness::compare(&f64s(got), &f64s(want), tolerance::<T>())
}

/// Collects failures over many cases.
#[derive(Default)]
pub struct Parity {
    failures: Vec<String>,
    cases: usize,
}

impl Parity {
    /// Runs `f` on `inputs` on both devices and records any mismatch under `name`.
    pub fn case<T: Float>(
        &mut self,
        dev: Device,
        name: &str,
        inputs: &[Tensor<T>],
        f: impl Fn(&[Var<T>]) -> Var<T>,
    ) {
        self.cases += 1;
        let run = |device: Device| {
            let tape = Tape::new();
            let leaves: Vec<Var<T>> = inputs
                .iter()
                .map(|t| tape.leaf(t.to_device(device).expect("device open")))
                .collect();
            let out = f(&leaves);
            let mut rng = Rng::new(99);
            let cot = Tensor::<T>::randn(out.shape(), 1.0, &mut rng)
                .to_device(device)
                .expect("device open");
            let refs: Vec<&Var<T>> = leaves.iter().collect();
            let grads = tape.vjp(&[&out], &[&cot], &refs);
            assert_eq!(
                out.value().device(),
                device,
                "{name}: output on the wrong device"
            );
            (
                out.value().to_vec(),
                grads.iter().map(Tensor::to_vec).collect::<Vec<_>>(),
            )
        };
        let (cpu_out, cpu_grads) = run(Device::Cpu);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(dev)));
        let (gpu_out, gpu_grads) = match result {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.failures
                    .push(format!("{name} [{}]: panicked: {msg}", T::DTYPE));
                return;
            }
        };
        if let Err(e) = compare(&gpu_out, &cpu_out) {
            self.failures
                .push(format!("{name} [{}]: forward: {e}", T::DTYPE));
        }
        for (i, (g, c)) in gpu_grads.iter().zip(&cpu_grads).enumerate() {
            if let Err(e) = compare(g, c) {
                self.failures
                    .push(format!("{name} [{}]: gradient of input {i}: {e}", T::DTYPE));
            }
        }
    }

    /// Panics listing every failing case, or prints the count that passed.
    pub fn finish(self, test: &str) {
        if self.failures.is_empty() {
            eprintln!("{test}: {} cases match the CPU", self.cases);
        } else {
            panic!(
                "{test}: {} of {} cases differ from the CPU:\n{}",
                self.failures.len(),
                self.cases,
                self.failures.join("\n")
            );
        }
    }
}

/// Standard normal values of `shape`, from `seed`.
pub fn randn<T: Float>(shape: &[usize], seed: u64) -> Tensor<T> {
    Tensor::randn(shape, 1.0, &mut Rng::new(seed))
}

/// Uniform values in `[lo, hi)` of `shape`, from `seed`.
pub fn uniform<T: Float>(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor<T> {
    Tensor::rand_uniform(shape, lo, hi, &mut Rng::new(seed))
}
