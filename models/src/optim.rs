//! Optimisation: Adam and AdamW, global-norm gradient clipping, and the learning-rate schedule
//! (linear warm-up, then cosine decay), as used to train the DEQ language models.

use deq_autograd::{Float, Tensor};
use serde::{Deserialize, Serialize};

/// Adam (Kingma & Ba 2015) or AdamW (decoupled weight decay, Loshchilov & Hutter 2019).
///
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `θ ← θ − lr·(m̂/(√v̂ + ε) + λθ)` with bias
/// corrections `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`; AdamW applies the decay `λθ` directly,
/// Adam adds `λθ` to the gradient instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decoupled (AdamW) rather than L2 (Adam) decay.
    pub decoupled: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

/// Adam's state: first and second moments per parameter and the step count.
#[derive(Clone, Debug)]
pub struct Adam<T: Float> {
    /// Settings.
    pub cfg: AdamConfig,
    /// First moments.
    pub m: Vec<Tensor<T>>,
    /// Second moments.
    pub v: Vec<Tensor<T>>,
    /// Steps taken.
    pub t: u64,
}

impl<T: Float> Adam<T> {
    /// Zero moments shaped like `params`.
    pub fn new(cfg: AdamConfig, params: &[Tensor<T>]) -> Self {
        let zeros = || {
            params
                .iter()
                .map(|p| Tensor::zeros_on(p.shape(), p.device()))
                .collect()
        };
        Adam {
            cfg,
            m: zeros(),
            v: zeros(),
            t: 0,
        }
    }

    /// One update of every parameter with learning rate `lr`.
    pub fn step(&mut self, params: &mut [Tensor<T>], grads: &[Tensor<T>], lr: f64) {
        self.t += 1;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        let (b1, b2) = (T::from_f64(c.beta1), T::from_f64(c.beta2));
        let (one_b1, one_b2) = (T::ONE - b1, T::ONE - b2);
        let step = T::from_f64(lr / bc1);
        let inv_bc2 = T::from_f64(1.0 / bc2);
        let eps = T::from_f64(c.eps);
        let wd = T::from_f64(c.weight_decay);
        let decay = T::from_f64(lr * c.weight_decay);
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            #[cfg(feature = "cuda")]
            if p.device() != deq_autograd::Device::Cpu {
                let s = deq_cuda::ops::optim::AdamStep {
                    beta1: c.beta1,
                    beta2: c.beta2,
                    step: lr / bc1,
                    inv_bc2: 1.0 / bc2,
                    eps: c.eps,
                    weight_decay: c.weight_decay,
                    decay: lr * c.weight_decay,
                    decoupled: c.decoupled,
                };
                adam_on_device(p, g, &mut self.m[i], &mut self.v[i], &s);
                continue;
            }
            let (m, v) = (self.m[i].data_mut(), self.v[i].data_mut());
            let (p, g) = (p.data_mut(), g.data());
            for j in 0..p.len() {
                let mut gj = g[j];
                if !c.decoupled {
                    gj += wd * p[j];
                }
                m[j] = b1 * m[j] + one_b1 * gj;
                v[j] = b2 * v[j] + one_b2 * gj * gj;
                let upd = step * m[j] / ((v[j] * inv_bc2).sqrt() + eps);
                if c.decoupled {
                    p[j] -= decay * p[j];
                }
                p[j] -= upd;
            }
        }
    }
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (non-finite when a gradient is).
pub fn clip_grad_norm<T: Float>(grads: &mut [Tensor<T>], max_norm: f64) -> f64 {
    let norm = grad_norm(grads);
    if norm.is_finite() && max_norm > 0.0 && norm > max_norm {
        let s = max_norm / norm;
        for g in grads.iter_mut() {
            if g.device() == deq_autograd::Device::Cpu {
                let s = T::from_f64(s);
                g.data_mut().iter_mut().for_each(|v| *v *= s);
            } else {
                *g = deq_autograd::Var::constant(g.clone())
                    .mul_scalar(s)
                    .into_value();
            }
        }
    }
    norm
}

/// The global L2 norm of `grads` (one device reduction and one download on a GPU).
fn grad_norm<T: Float>(grads: &[Tensor<T>]) -> f64 {
    #[cfg(feature = "cuda")]
    {
        let on_gpu: Option<Vec<_>> = grads.iter().map(|g| g.gpu()).collect();
        if let Some(bufs) = on_gpu.filter(|b| !b.is_empty()) {
            return deq_cuda::ops::optim::sum_squares(&bufs).sqrt();
        }
    }
    grads.iter().map(|g| g.norm().powi(2)).sum::<f64>().sqrt()
}

/// Adam on device tensors: the moments and the parameter are updated in place (each is
/// copied first if shared, like `data_mut` on the host).
#[cfg(feature = "cuda")]
fn adam_on_device<T: Float>(
    p: &mut Tensor<T>,
    g: &Tensor<T>,
    m: &mut Tensor<T>,
    v: &mut Tensor<T>,
    s: &deq_cuda::ops::optim::AdamStep,
) {
    let shape = p.shape().to_vec();
    let g = g.gpu().unwrap_or_else(|| {
        panic!(
            "Adam: parameter on {} but gradient on {}",
            p.device(),
            g.device()
        )
    });
    let mut pb = std::mem::replace(p, Tensor::zeros(&[0])).into_gpu();
    let mut mb = std::mem::replace(m, Tensor::zeros(&[0])).into_gpu();
    let mut vb = std::mem::replace(v, Tensor::zeros(&[0])).into_gpu();
    deq_cuda::ops::optim::adam(&mut pb, g, &mut mb, &mut vb, s);
    *p = Tensor::from_gpu(pb, &shape);
    *m = Tensor::from_gpu(mb, &shape);
    *v = Tensor::from_gpu(vb, &shape);
}

/// Linear warm-up over `warmup` steps to `lr`, then cosine decay to `min_lr` at `total`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
}

impl LrSchedule {
    /// The learning rate at `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        self.min_lr
            + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}
