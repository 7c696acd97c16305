//! What `training.png` shows (the training loss, the validation loss, forward residual traces),
//! rebuilt from the run's own `metrics.jsonl` when it resumes.

use crate::cli::plot::{write_png, Panel, Series};
use deq_models::error::Result;
use deq_models::train::StepMetrics;
use serde_json::Value;
use std::path::Path;

/// The curves of a run so far.
#[derive(Default)]
pub struct History {
    train: Vec<(f64, f64)>,
    valid: Vec<(f64, f64)>,
    traces: Vec<(usize, Vec<f64>)>,
}

impl History {
    /// The curves in `records` (a metrics log, oldest first) up to step `upto`, honouring the
    /// resume records in it (a resume at step k drops what the log held after step k), and the
    /// number of step records after `upto` that a resume at `upto` supersedes.
    pub fn from_records(records: &[Value], upto: usize, trace_every: usize) -> (History, usize) {
        let mut h = History::default();
        let step = |r: &Value| r["step"].as_u64().map(|s| s as usize);
        for r in records {
            match (r["kind"].as_str(), step(r)) {
                (Some("resume"), Some(k)) => h.truncate(k),
                (Some("train"), Some(s)) => {
                    let trace: Vec<f64> = r["fwd_trace"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_f64).collect())
                        .unwrap_or_default();
                    h.push_train(
                        s,
                        r["loss"].as_f64().unwrap_or(f64::NAN),
                        &trace,
                        trace_every,
                    );
                }
                (Some("valid"), Some(s)) => h.push_valid(s, r["loss"].as_f64().unwrap_or(f64::NAN)),
                _ => {}
            }
        }
        let superseded = h.train.iter().filter(|(s, _)| *s > upto as f64).count();
        h.truncate(upto);
        (h, superseded)
    }

    fn truncate(&mut self, step: usize) {
        let s = step as f64;
        self.train.retain(|p| p.0 <= s);
        self.valid.retain(|p| p.0 <= s);
        self.traces.retain(|t| t.0 <= step);
    }

    fn push_train(&mut self, step: usize, loss: f64, trace: &[f64], trace_every: usize) {
        self.train.push((step as f64, loss));
        if step.is_multiple_of(trace_every.max(1)) && !trace.is_empty() {
            self.traces.push((step, trace.to_vec()));
        }
    }

    /// Records one training step (its residual trace every `trace_every` steps).
    pub fn step(&mut self, m: &StepMetrics, trace_every: usize) {
        self.push_train(m.step, m.loss, &m.fwd_trace, trace_every);
    }

    fn push_valid(&mut self, step: usize, loss: f64) {
        self.valid.push((step as f64, loss));
    }

    /// Records a validation loss.
    pub fn valid(&mut self, step: usize, loss: f64) {
        self.push_valid(step, loss);
    }

    /// Draws the curves into `path`.
    pub fn plot(&self, path: &Path) -> Result<()> {
        write_png(path, &self.panels())
    }

    fn panels(&self) -> Vec<Panel> {
        // Exponential moving average of the training loss (per-step losses are noisy).
        let mut ema = None;
        let smooth: Vec<(f64, f64)> = self
            .train
            .iter()
            .filter(|(_, l)| l.is_finite())
            .map(|&(s, l)| {
                let e = ema.map_or(l, |e: f64| 0.95 * e + 0.05 * l);
                ema = Some(e);
                (s, e)
            })
            .collect();
        let loss = Panel {
            title: "loss".into(),
            x_label: "step".into(),
            y_label: "cross-entropy (nats)".into(),
            log_y: false,
            series: vec![
                Series {
                    label: "train (EMA)".into(),
                    points: smooth,
                },
                Series {
                    label: "valid".into(),
                    points: self.valid.clone(),
                },
            ],
        };
        let traces = Panel {
            title: "forward solver residuals".into(),
            x_label: "iteration".into(),
            y_label: "relative residual".into(),
            log_y: true,
            series: self
                .traces
                .iter()
                .map(|(step, t)| Series {
                    label: format!("step {step}"),
                    points: t.iter().enumerate().map(|(i, &r)| (i as f64, r)).collect(),
                })
                .collect(),
        };
        vec![loss, traces]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_resume_drops_the_superseded_records_and_counts_them() {
        let train = |s: usize| json!({"kind": "train", "step": s, "loss": s as f64});
        let mut records: Vec<Value> = (1..=6).map(train).collect();
        records.push(json!({"kind": "valid", "step": 6, "loss": 0.5}));
        // A first resume at step 4 supersedes steps 5 and 6, which are then done again.
        records.push(json!({"kind": "resume", "step": 4}));
        records.extend((5..=8).map(train));
        let (h, superseded) = History::from_records(&records, 7, 1);
        let steps: Vec<f64> = h.train.iter().map(|p| p.0).collect();
        assert_eq!(steps, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert!(h.valid.is_empty(), "the step-6 evaluation was superseded");
        assert_eq!(superseded, 1, "step 8 lies after the new resume point");
    }
}
