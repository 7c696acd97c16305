//! `--minutes N`: a wall-time budget for a run, usable with any preset or configuration.
//!
//! Before the first step a probe times the run's own kinds of work on a throwaway trainer of
//! the same configuration: a few pre-training steps, a few DEQ steps, and an evaluation of a
//! slice of the validation split (scaled to the whole split). The step count `S` is then the
//! largest whose predicted wall time fits what is left of the budget:
//!
//! `time(S) = P(S)·t_pre + (S − P(S))·t_deq + (E + 1)·t_valid + t_test`
//!
//! with `P(S) = min(pretrain_steps, S / PRETRAIN_DIVISOR)` pre-training steps and `E` periodic
//! evaluations (one every `S / EVALS_PER_RUN` steps and one at the last step: at most
//! `EVALS_PER_RUN + 1`, which the plan assumes so that `time` grows with `S`); the last two terms
//! are the final evaluation of the best checkpoint. `S` fixes the warm-up, pre-training and
//! evaluation interval as `--steps S` would ([`TrainConfig::set_steps`]).
//!
//! At each periodic evaluation the plan is redone with what the run has measured so far (its
//! mean DEQ step and the evaluation just done): the remaining steps are re-sized so that the
//! run ends on time on a machine whose speed drifts, changing only the step count and the
//! schedule's total ([`TrainConfig::extend_to`]: the cosine decay stretches or shrinks from
//! there, the warm-up, pre-training and evaluation interval stay). Each plan is written to
//! `metrics.jsonl` as a `plan` record.

use deq_autograd::Device;
use deq_models::config::{EVALS_PER_RUN, PRETRAIN_DIVISOR};
use deq_models::data::{batchify, Corpus};
use deq_models::error::{DeqError, Result};
use deq_models::score::EvalSplit;
use deq_models::train::{TrainConfig, Trainer};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Timed steps of each kind in the probe (after one untimed warm-up step).
const PROBE_STEPS: usize = 3;
/// The probe evaluates this fraction of the validation split.
const PROBE_EVAL_FRACTION: usize = 16;

/// Seconds per unit of each kind of work.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Costs {
    /// A pre-training (unrolled) step.
    pub pretrain_step: f64,
    /// A DEQ step.
    pub deq_step: f64,
    /// An evaluation of the whole validation split.
    pub valid: f64,
    /// An evaluation of the whole test split.
    pub test: f64,
}

/// The largest step count whose predicted time (module docs) fits `seconds`, with at most
/// `pretrain_cap` pre-training steps; `None` when not even one step and the evaluations fit.
pub fn plan_steps(seconds: f64, costs: &Costs, pretrain_cap: usize) -> Option<usize> {
    let time = |s: usize| {
        let pre = pretrain_cap.min(s / PRETRAIN_DIVISOR);
        pre as f64 * costs.pretrain_step
            + (s - pre) as f64 * costs.deq_step
            + (MAX_PERIODIC_EVALS + 1) as f64 * costs.valid
            + costs.test
    };
    largest_fitting(1, seconds, time)
}

/// The largest total step count `S > step` for a run at `step` with pre-training up to
/// `pretrain_end` and an evaluation every `eval_every` steps, whose remaining time fits
/// `seconds`; `None` when not even one more step and the evaluations fit.
pub fn replan_steps(
    seconds: f64,
    costs: &Costs,
    step: usize,
    pretrain_end: usize,
    eval_every: usize,
) -> Option<usize> {
    let time = |s: usize| {
        let pre = pretrain_end.saturating_sub(step).min(s - step);
        let deq = s - step - pre;
        let evals = match (s.checked_div(eval_every), step.checked_div(eval_every)) {
            (Some(at_end), Some(done)) => {
                at_end - done + usize::from(!s.is_multiple_of(eval_every))
            }
            _ => 1,
        };
        pre as f64 * costs.pretrain_step
            + deq as f64 * costs.deq_step
            + (evals + 1) as f64 * costs.valid
            + costs.test
    };
    largest_fitting(step + 1, seconds, time)
}

/// The largest `s ≥ low` with `time(s) ≤ seconds`, for a `time` that does not decrease with `s`.
fn largest_fitting(low: usize, seconds: f64, time: impl Fn(usize) -> f64) -> Option<usize> {
    // A NaN time never fits.
    let fits = |s: usize| time(s).partial_cmp(&seconds).is_some_and(|o| o.is_le());
    if !fits(low) {
        return None;
    }
    let mut high = low.max(1);
    while fits(high * 2) && high < 1 << 40 {
        high *= 2;
    }
    let (mut fitting, mut failing) = (high, high * 2);
    while failing - fitting > 1 {
        let mid = fitting + (failing - fitting) / 2;
        if fits(mid) {
            fitting = mid;
        } else {
            failing = mid;
        }
    }
    Some(fitting)
}

/// The most periodic evaluations of a planned run: one every `S / EVALS_PER_RUN` steps and
/// one at the last step when that is not a multiple of the interval.
const MAX_PERIODIC_EVALS: usize = EVALS_PER_RUN + 1;

/// A running budget: the deadline and what the run has measured.
pub struct Budget {
    minutes: f64,
    deadline: Instant,
    probe: Costs,
    deq_seconds: f64,
    deq_steps: usize,
    pretrain_seconds: f64,
    pretrain_steps: usize,
}

impl Budget {
    /// Probes the costs of `scratch`'s configuration on `device` (training and evaluating
    /// `scratch`, a fresh trainer that the run does not use afterwards) and plans its step
    /// count so that the run ends `minutes` after `start`; returns the budget and the
    /// configuration set to that count.
    pub fn plan(
        minutes: f64,
        start: Instant,
        scratch: Trainer,
        corpus: &Corpus,
        device: Device,
    ) -> Result<(Budget, TrainConfig)> {
        let cfg = scratch.cfg.clone();
        let probe = probe(scratch, corpus, device)?;
        let deadline = start + Duration::from_secs_f64(minutes * 60.0);
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let steps = plan_steps(left, &probe, cfg.pretrain_steps).ok_or_else(|| {
            DeqError::config(format!(
                "--minutes {minutes}: the budget does not fit one step and the evaluations \
                 (measured: {:.2} s a step, {:.1} s a validation and {:.1} s a test evaluation)",
                probe.deq_step, probe.valid, probe.test
            ))
        })?;
        let mut planned = cfg;
        planned.set_steps(steps);
        let budget = Budget {
            minutes,
            deadline,
            probe,
            deq_seconds: 0.0,
            deq_steps: 0,
            pretrain_seconds: 0.0,
            pretrain_steps: 0,
        };
        Ok((budget, planned))
    }

    /// The `plan` record of the first plan.
    pub fn first_record(&self, cfg: &TrainConfig) -> serde_json::Value {
        serde_json::json!({"kind": "plan", "step": 0, "minutes": self.minutes,
            "steps": cfg.steps, "costs": self.probe, "measured": "probe",
            "seconds_left": self.seconds_left()})
    }

    /// Counts one step's wall time (`pretraining`: an unrolled pre-training step).
    pub fn observe(&mut self, seconds: f64, pretraining: bool) {
        if pretraining {
            self.pretrain_seconds += seconds;
            self.pretrain_steps += 1;
        } else {
            self.deq_seconds += seconds;
            self.deq_steps += 1;
        }
    }

    /// After a periodic evaluation that took `valid_seconds`: the step count that ends the run
    /// on time, and the `plan` record; `None` when the plan stands.
    pub fn replan(
        &self,
        cfg: &TrainConfig,
        step: usize,
        valid_seconds: f64,
    ) -> Option<(usize, serde_json::Value)> {
        let mean = |sum: f64, n: usize, probe: f64| if n > 0 { sum / n as f64 } else { probe };
        let costs = Costs {
            pretrain_step: mean(
                self.pretrain_seconds,
                self.pretrain_steps,
                self.probe.pretrain_step,
            ),
            deq_step: mean(self.deq_seconds, self.deq_steps, self.probe.deq_step),
            valid: valid_seconds,
            test: valid_seconds * self.probe.test / self.probe.valid.max(f64::MIN_POSITIVE),
        };
        let left = self.seconds_left();
        let steps = replan_steps(left, &costs, step, cfg.pretrain_steps, cfg.eval_every)
            .unwrap_or(step + 1);
        (steps != cfg.steps).then(|| {
            let record = serde_json::json!({"kind": "plan", "step": step,
                "minutes": self.minutes, "steps": steps, "costs": costs,
                "measured": "run", "seconds_left": left});
            (steps, record)
        })
    }

    fn seconds_left(&self) -> f64 {
        self.deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    }
}

/// Times the kinds of work of a throwaway `trainer`'s configuration.
fn probe(mut trainer: Trainer, corpus: &Corpus, device: Device) -> Result<Costs> {
    trainer.to_device(device)?;
    let cfg = trainer.cfg.clone();
    let train = batchify(&corpus.train, cfg.batch)?;
    let time_steps = |trainer: &mut Trainer, from: usize| {
        trainer.step = from;
        let mut seconds = 0.0;
        for k in 0..=PROBE_STEPS {
            let m = trainer.train_step(&train);
            if k > 0 {
                seconds += m.seconds;
            }
        }
        seconds / PROBE_STEPS as f64
    };
    let deq_step = time_steps(&mut trainer, cfg.pretrain_steps);
    let pretrain_step = if cfg.pretrain_steps > 0 {
        time_steps(&mut trainer, 0)
    } else {
        deq_step
    };
    let eval_seconds = |ids: &[usize]| -> Result<f64> {
        let min = cfg.eval.batch * (cfg.eval.seq_len + 1);
        let len = (ids.len() / PROBE_EVAL_FRACTION).max(min).min(ids.len());
        let split = EvalSplit::new(&ids[..len], &cfg.eval)?;
        let start = Instant::now();
        split.score(&trainer.model, &cfg);
        Ok(start.elapsed().as_secs_f64() * ids.len() as f64 / len as f64)
    };
    let valid = eval_seconds(&corpus.valid)?;
    let test = valid * corpus.test.len() as f64 / corpus.valid.len().max(1) as f64;
    Ok(Costs {
        pretrain_step,
        deq_step,
        valid,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COSTS: Costs = Costs {
        pretrain_step: 0.5,
        deq_step: 1.0,
        valid: 20.0,
        test: 25.0,
    };

    #[test]
    fn the_plan_is_the_largest_step_count_that_fits() {
        // 6 evaluations of 20 s and a test of 25 s leave 1055 s; 200 pre-training steps at
        // 0.5 s leave 955 s for DEQ steps at 1 s.
        assert_eq!(plan_steps(1200.0, &COSTS, 200), Some(1155));
        // Below 5 × 200 steps, pre-training is a fifth of the run.
        let s = plan_steps(500.0, &COSTS, 200).unwrap();
        let time = |s: usize| {
            let pre = s / PRETRAIN_DIVISOR;
            pre as f64 * 0.5 + (s - pre) as f64 + 145.0
        };
        assert!(time(s) <= 500.0 && time(s + 1) > 500.0, "{s}");
        assert_eq!(plan_steps(100.0, &COSTS, 200), None);
    }

    #[test]
    fn a_replan_fits_the_remaining_steps_and_evaluations_into_the_time_left() {
        // At step 250 of a run past pre-training, evaluating every 250 steps: 600 s left.
        let s = replan_steps(600.0, &COSTS, 250, 200, 250).unwrap();
        let evals = s / 250 - 1 + usize::from(!s.is_multiple_of(250));
        let time = (s - 250) as f64 + (evals + 1) as f64 * 20.0 + 25.0;
        assert!(time <= 600.0, "{s} steps take {time} s");
        assert!(s > 250 + 400, "{s} leaves time unused");
        // Slower steps: fewer of them.
        let slow = Costs {
            deq_step: 2.0,
            ..COSTS
        };
        assert!(replan_steps(600.0, &slow, 250, 200, 250).unwrap() < s);
        // No time left for even one step and the final evaluation.
        assert_eq!(replan_steps(30.0, &COSTS, 250, 200, 250), None);
    }
}
