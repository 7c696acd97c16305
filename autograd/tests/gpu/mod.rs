//! GPU-vs-CPU parity harness shared by the `gpu_parity_*` tests.
//!
//! Each case runs an op forward and its VJP (all inputs, a random cotangent) on the CPU and on
//! `cuda:0`, and compares outputs and gradients: max |gpu − cpu| / max |cpu| must stay below
//! 1e-5 in f32 and 1e-12 in f64 (the error is measured against each tensor's scale, because
//! GPU reductions sum in a different order). A run collects every failing case before it
//! fails, so one run on a GPU machine reports all of them. Without a GPU the tests print why
//! they skip and pass.

#![allow(dead_code)]

use deq_autograd::{Device, Float, Rng, Tape, Tensor, Var};

/// `cuda:0` if it can be opened here; otherwise prints why the caller skips.
pub fn device(test: &str) -> Option<Device> {
    let dev = Device::Cuda(0);
    match dev.open() {
        Ok(()) => Some(dev),
        Err(e) => {
            eprintln!("{test}: skipped, {e}");
            None
        }
    }
}

/// Relative tolerance for `T`: 1e-5 for f32, 1e-12 for f64.
pub fn tolerance<T: Float>() -> f64 {
    if std::mem::size_of::<T>() == 4 {
        1e-5
    } else {
        1e-12
    }
}

/// max |a − b| / max |b| (0 when both are all zeros).
pub fn scaled_error<T: Float>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|v| v.to_f64().abs()).fold(0.0, f64::max);
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.to_f64() - y.to_f64()).abs())
        .fold(0.0, f64::max);
    if !diff.is_finite() {
        return f64::INFINITY;
    }
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
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
        let tol = tolerance::<T>();
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
        let e = scaled_error(&gpu_out, &cpu_out);
        if e > tol {
            self.failures.push(format!(
                "{name} [{}]: forward error {e:.2e} > {tol:.0e}",
                T::DTYPE
            ));
        }
        for (i, (g, c)) in gpu_grads.iter().zip(&cpu_grads).enumerate() {
            let e = scaled_error(g, c);
            if e > tol {
                self.failures.push(format!(
                    "{name} [{}]: gradient of input {i} error {e:.2e} > {tol:.0e}",
                    T::DTYPE
                ));
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
