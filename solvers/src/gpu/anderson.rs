//! Anderson acceleration on the device: the method of `anderson.rs` (same ring, incremental
//! Gram matrix, bordered solve, plain-step fallback) with `X`, `G` as `[b, slots, n]` device
//! histories. The Gram row of the new slot comes back as `b · slots` scalars; the small
//! bordered systems are solved on the host and the weights go back as an upload.

use super::GpuStepper;
use crate::bordered::Bordered;
use crate::stats::SolveStats;
use deq_autograd::Float;
use deq_cuda::ops::solver::{self as k, Rows};
use deq_cuda::{Gpu, GpuBuffer};

pub(crate) struct Anderson<T: Float> {
    n: usize,
    slots: usize,
    lam: f64,
    beta: f64,
    x: GpuBuffer<T>,
    g: GpuBuffer<T>,
    /// Per sample `G_i · G_j`, `slots × slots` row-major.
    gram: Vec<Vec<f64>>,
    systems: Vec<Bordered>,
    /// Pairs written so far; equal for every active sample (frozen samples never resume).
    seen: usize,
    fallbacks: usize,
}

impl<T: Float> Anderson<T> {
    /// Zeroed histories of `min(m, max_iter)` slots for `b` samples of `n` values.
    pub(crate) fn new(
        gpu: &Gpu,
        b: usize,
        n: usize,
        m: usize,
        lam: f64,
        beta: f64,
        max_iter: usize,
    ) -> Self {
        let slots = m.min(max_iter).max(1);
        Anderson {
            n,
            slots,
            lam,
            beta,
            x: gpu.zeros(b * slots * n),
            g: gpu.zeros(b * slots * n),
            gram: vec![vec![0.0; slots * slots]; b],
            systems: (0..b).map(|_| Bordered::new(slots)).collect(),
            seen: 0,
            fallbacks: 0,
        }
    }
}

impl<T: Float> GpuStepper<T> for Anderson<T> {
    const EXTRA_EVALS: usize = 0;

    fn step(&mut self, z: &mut GpuBuffer<T>, fz: &GpuBuffer<T>, active: &[bool]) {
        let (b, n, slots) = (active.len(), self.n, self.slots);
        let kslot = self.seen % slots;
        k::anderson_record(z, fz, &mut self.x, &mut self.g, active, kslot, n, slots);
        self.seen += 1;
        let used = self.seen.min(slots);
        let row = k::dots(
            &self.g,
            Rows::Slot { k: kslot, slots },
            &self.g,
            b,
            n,
            slots,
            used,
        );
        for s in (0..b).filter(|&s| active[s]) {
            let gram = &mut self.gram[s];
            for j in 0..used {
                let v = row[s * slots + j];
                gram[kslot * slots + j] = v;
                gram[j * slots + kslot] = v;
            }
        }
        if self.seen == 1 {
            // X_1 = f(X_0).
            k::copy_rows(z, fz, active, n);
            return;
        }
        let mut base = vec![0.0; b];
        let mut ca = vec![0.0; b * slots];
        let mut cb = vec![0.0; b * slots];
        for s in (0..b).filter(|&s| active[s]) {
            match self.systems[s].weights(&self.gram[s], slots, used, self.lam) {
                Some(alpha) => {
                    // z = Σ α_i X_i + β Σ α_i G_i.
                    for (i, &a) in alpha.iter().enumerate() {
                        ca[s * slots + i] = a;
                        cb[s * slots + i] = a * self.beta;
                    }
                }
                None => {
                    // z = X_k + β G_k.
                    self.fallbacks += 1;
                    base[s] = 1.0;
                    cb[s * slots + kslot] = self.beta;
                }
            }
        }
        k::combine(
            z,
            None,
            &base,
            &self.x,
            &ca,
            Some((&self.g, &cb)),
            active,
            n,
            slots,
        );
    }

    fn report(&self, stats: &mut SolveStats) {
        stats.fallback_steps += self.fallbacks;
    }
}
