//! Training and evaluation of a DEQ language model: one optimisation step, perplexity
//! evaluation, and the state needed to resume exactly. The configuration lives in
//! [`crate::config`] (re-exported here).

use crate::data::Batched;
use crate::lm::{JacobianProbe, LanguageModel, Memory};
use crate::optim::{clip_grad_norm, Adam};
use deq_autograd::device::DeviceError;
use deq_autograd::{no_grad, Device, Rng, Tape, Tensor, Var};
use deq_solvers::implicit::{BackwardMode, DeqConfig};
use serde::Serialize;
use std::time::Instant;

pub use crate::config::{EvalConfig, TrainConfig, PRESETS};

/// Mixes the step number into the Jacobian penalty's seed (an odd 64-bit constant).
const JAC_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// What one training step measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepMetrics {
    /// 1-based step number.
    pub step: usize,
    /// Training loss (nats per token).
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Forward solver iterations (0 while pre-training).
    pub fwd_iters: usize,
    /// Forward relative residual (max over samples).
    pub fwd_resid: f64,
    /// Backward solver iterations.
    pub bwd_iters: usize,
    /// Backward relative residual.
    pub bwd_resid: f64,
    /// The step was skipped (non-finite loss or gradient).
    pub skipped: bool,
    /// Tokens processed.
    pub tokens: usize,
    /// Wall time of the step in seconds.
    pub seconds: f64,
    /// The forward solver's residual trace of the first sample.
    #[serde(skip)]
    pub fwd_trace: Vec<f64>,
    /// The Jacobian penalty `‖J_f(z*)‖_F² / N` when this step added it (before its weight).
    pub jac_loss: Option<f64>,
}

/// A model, its optimiser and the position in the data: everything to continue training.
pub struct Trainer {
    /// The run's configuration.
    pub cfg: TrainConfig,
    /// The model (f32).
    pub model: LanguageModel<f32>,
    /// Optimiser state.
    pub adam: Adam<f32>,
    /// Steps done.
    pub step: usize,
    /// Dropout randomness.
    pub rng: Rng,
    /// Next segment's start in the training streams.
    pub position: usize,
    /// Memory carried from the previous training segment.
    pub memory: Memory<f32>,
    /// Lowest validation loss seen.
    pub best_valid: f64,
    /// Consecutive skipped steps.
    pub skips: usize,
    /// Factor on the schedule's learning rate (halved by each recovery from a non-finite
    /// streak; 1 otherwise).
    pub lr_scale: f64,
}

impl Trainer {
    /// A fresh run.
    pub fn new(cfg: TrainConfig) -> Trainer {
        let mut rng = Rng::new(cfg.seed);
        let model = LanguageModel::new(&cfg.model, &mut rng);
        let adam = Adam::new(cfg.adam.clone(), model.store.values());
        Trainer {
            cfg,
            model,
            adam,
            step: 0,
            rng,
            position: 0,
            memory: Memory::default(),
            best_valid: f64::INFINITY,
            skips: 0,
            lr_scale: 1.0,
        }
    }

    /// Moves the parameters, the optimiser moments and the segment memory to `device`
    /// (checkpoints are still written from host copies). Errors when the device cannot be
    /// opened ("no CUDA driver found", "no CUDA device").
    pub fn to_device(&mut self, device: Device) -> Result<(), DeviceError> {
        device.open()?;
        let mv = |t: &mut Tensor<f32>| -> Result<(), DeviceError> {
            *t = t.to_device(device)?;
            Ok(())
        };
        self.model.store.values_mut().iter_mut().try_for_each(mv)?;
        self.adam.m.iter_mut().try_for_each(mv)?;
        self.adam.v.iter_mut().try_for_each(mv)?;
        self.memory.z.iter_mut().try_for_each(mv)?;
        self.memory.u.iter_mut().try_for_each(mv)?;
        Ok(())
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        self.model
            .store
            .values()
            .first()
            .map_or(Device::Cpu, Tensor::device)
    }

    fn deq_for_step(&self) -> DeqConfig {
        let mut c = self.cfg.train_deq.clone();
        if self.step < self.cfg.pretrain_steps {
            c.mode = BackwardMode::Unrolled {
                k: self.cfg.pretrain_depth,
            };
        }
        c
    }

    /// One optimisation step on the next training segment (wrapping around the data).
    pub fn train_step(&mut self, data: &Batched) -> StepMetrics {
        let start = Instant::now();
        let seq = self.cfg.seq_len;
        let (inputs, targets, t) = match data.segment(self.position, seq) {
            Some(s) => s,
            None => {
                self.position = 0;
                self.memory = Memory::default();
                data.segment(0, seq)
                    .expect("training data holds at least one segment")
            }
        };
        self.position += t;
        let deq_cfg = self.deq_for_step();
        let tape = Tape::new();
        let p = self.model.store.leaves(&tape);
        // The penalty's draws come from a generator of their own, seeded by the step, so that
        // turning it on leaves the dropout and data streams as they were and a resumed run
        // draws what an uninterrupted one would.
        let jac = &self.cfg.jac;
        let mut probe_rng = Rng::new(self.cfg.seed ^ (self.step as u64).wrapping_mul(JAC_SEED));
        let regularise = jac.enabled() && probe_rng.uniform() < jac.freq;
        let probe = regularise.then_some(JacobianProbe {
            n_vecs: jac.n_vecs,
            rng: &mut probe_rng,
        });
        let out = self.model.forward_regularised(
            &p,
            &inputs,
            &targets,
            data.streams,
            &self.memory,
            &deq_cfg,
            Some(&mut self.rng),
            probe,
        );
        let loss = out.loss.item() as f64;
        let jac_loss = out.jacobian.as_ref().map(|j| j.item() as f64);
        let objective = match &out.jacobian {
            Some(j) => out.loss.add(&j.mul_scalar(jac.weight)),
            None => out.loss.clone(),
        };
        let wrt: Vec<&Var<f32>> = p.iter().collect();
        let one = Tensor::scalar(1.0)
            .to_device(self.device())
            .expect("the parameters' device is open");
        let mut grads = tape.vjp(&[&objective], &[&one], &wrt);
        drop(tape);
        let grad_norm = clip_grad_norm(&mut grads, self.cfg.clip);
        let lr = self.cfg.schedule.at(self.step) * self.lr_scale;
        let diverged = out.stats.forward.as_ref().is_some_and(|s| s.any_diverged());
        let skipped = !loss.is_finite()
            || !grad_norm.is_finite()
            || diverged
            || jac_loss.is_some_and(|j| !j.is_finite());
        if skipped {
            self.skips += 1;
        } else {
            self.skips = 0;
            self.adam.step(self.model.store.values_mut(), &grads, lr);
        }
        // A skipped step's memory may hold the very values that made it fail: start afresh.
        let finite = |t: &Option<Tensor<f32>>| t.as_ref().is_none_or(Tensor::all_finite);
        self.memory = if skipped || !finite(&out.memory.z) || !finite(&out.memory.u) {
            Memory::default()
        } else {
            out.memory
        };
        self.step += 1;
        let fwd = out.stats.forward.clone();
        let bwd = out.stats.backward();
        StepMetrics {
            step: self.step,
            loss,
            lr,
            grad_norm,
            fwd_iters: fwd.as_ref().map_or(0, |s| s.iterations),
            fwd_resid: fwd.as_ref().map_or(0.0, |s| s.max_rel()),
            bwd_iters: bwd.as_ref().map_or(0, |s| s.iterations),
            bwd_resid: bwd.as_ref().map_or(0.0, |s| s.max_rel()),
            skipped,
            tokens: inputs.len(),
            seconds: start.elapsed().as_secs_f64(),
            fwd_trace: fwd
                .as_ref()
                .and_then(|s| s.rel_trace.first().cloned())
                .unwrap_or_default(),
            jac_loss,
        }
    }

    /// Mean loss per token over `data` (at most `max_segments` segments; 0 = all), with the
    /// evaluation DEQ settings, no dropout, memory carried across segments.
    pub fn evaluate(&self, data: &Batched, max_segments: usize) -> f64 {
        evaluate(&self.model, &self.cfg, data, max_segments)
    }
}

/// Mean loss per token of `model` over `data` (see [`Trainer::evaluate`]).
pub fn evaluate(
    model: &LanguageModel<f32>,
    cfg: &TrainConfig,
    data: &Batched,
    max_segments: usize,
) -> f64 {
    no_grad(|| {
        let p = model.store.constants();
        let mut memory = Memory::default();
        let (mut total, mut count) = (0.0f64, 0usize);
        let mut pos = 0;
        let mut segments = 0;
        while let Some((inputs, targets, t)) = data.segment(pos, cfg.seq_len) {
            let out = model.forward(
                &p,
                &inputs,
                &targets,
                data.streams,
                &memory,
                &cfg.eval_deq,
                None,
            );
            total += out.loss.item() as f64 * inputs.len() as f64;
            count += inputs.len();
            memory = out.memory;
            pos += t;
            segments += 1;
            if max_segments > 0 && segments >= max_segments {
                break;
            }
        }
        if count == 0 {
            f64::NAN
        } else {
            total / count as f64
        }
    })
}
