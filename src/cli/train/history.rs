//! What `training.png` shows (the training and validation losses; the forward and backward
//! solves' final residuals over training, with the evaluations' forward residual; forward
//! residual traces), rebuilt from the run's own `metrics.jsonl` when it resumes.

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
    /// Per training step: the forward and backward solves' final relative residuals.
    fwd: Vec<(f64, f64)>,
    bwd: Vec<(f64, f64)>,
    /// Per evaluation: the mean forward residual.
    eval_fwd: Vec<(f64, f64)>,
}

/// A training step's figures that the plot shows.
struct StepPoint<'a> {
    step: usize,
    loss: f64,
    fwd_resid: f64,
    bwd_resid: f64,
    trace: &'a [f64],
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
                    let number = |key: &str| r[key].as_f64().unwrap_or(f64::NAN);
                    let point = StepPoint {
                        step: s,
                        loss: number("loss"),
                        fwd_resid: number("fwd_resid"),
                        bwd_resid: number("bwd_resid"),
                        trace: &trace,
                    };
                    h.push_train(&point, trace_every);
                }
                (Some("valid"), Some(s)) => {
                    let number = |key: &str| r[key].as_f64().unwrap_or(f64::NAN);
                    h.push_valid(s, number("loss"), number("fwd_resid_mean"));
                }
                _ => {}
            }
        }
        let superseded = h.train.iter().filter(|(s, _)| *s > upto as f64).count();
        h.truncate(upto);
        (h, superseded)
    }

    fn truncate(&mut self, step: usize) {
        let s = step as f64;
        for curve in [
            &mut self.train,
            &mut self.valid,
            &mut self.fwd,
            &mut self.bwd,
            &mut self.eval_fwd,
        ] {
            curve.retain(|p| p.0 <= s);
        }
        self.traces.retain(|t| t.0 <= step);
    }

    fn push_train(&mut self, p: &StepPoint, trace_every: usize) {
        let x = p.step as f64;
        self.train.push((x, p.loss));
        self.fwd.push((x, p.fwd_resid));
        self.bwd.push((x, p.bwd_resid));
        if p.step.is_multiple_of(trace_every.max(1)) && !p.trace.is_empty() {
            self.traces.push((p.step, p.trace.to_vec()));
        }
    }

    /// Records one training step (its residual trace every `trace_every` steps).
    pub fn step(&mut self, m: &StepMetrics, trace_every: usize) {
        let point = StepPoint {
            step: m.step,
            loss: m.loss,
            fwd_resid: m.fwd_resid,
            bwd_resid: m.bwd_resid,
            trace: &m.fwd_trace,
        };
        self.push_train(&point, trace_every);
    }

    fn push_valid(&mut self, step: usize, loss: f64, fwd_resid: f64) {
        self.valid.push((step as f64, loss));
        self.eval_fwd.push((step as f64, fwd_resid));
    }

    /// Records an evaluation: its loss and mean forward residual.
    pub fn valid(&mut self, step: usize, loss: f64, fwd_resid: f64) {
        self.push_valid(step, loss, fwd_resid);
    }

    /// Draws the curves into `path`.
    pub fn plot(&self, path: &Path) -> Result<()> {
        write_png(path, &self.panels())
    }

    fn panels(&self) -> Vec<Panel> {
        // Exponential moving average of the training loss (per-step losses are noisy).
        let smooth = moving_average(&self.train, |l| l, |l| l);
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
        // Residuals are smoothed geometrically (an average of their logarithms); steps
        // without a solve (pre-training) record 0 and are left out.
        let log_smooth = |points: &[(f64, f64)]| {
            let positive: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1 > 0.0).collect();
            moving_average(&positive, f64::ln, f64::exp)
        };
        let residuals = Panel {
            title: "solver residuals over training".into(),
            x_label: "step".into(),
            y_label: "final relative residual".into(),
            log_y: true,
            series: vec![
                Series {
                    label: "forward (train, EMA)".into(),
                    points: log_smooth(&self.fwd),
                },
                Series {
                    label: "backward (train, EMA)".into(),
                    points: log_smooth(&self.bwd),
                },
                Series {
                    label: "forward (valid, mean)".into(),
                    points: self.eval_fwd.clone(),
                },
            ],
        };
        vec![loss, residuals, traces]
    }
}

/// Redraws the plot of the run whose log is `metrics` into `png` from the log alone (all its
/// step records, honouring its resume records); returns the number of steps drawn.
pub fn redraw(metrics: &Path, png: &Path) -> Result<usize> {
    let records = crate::cli::progress::read_records(metrics)?;
    let last = records
        .iter()
        .filter(|r| r["kind"] == "train")
        .filter_map(|r| r["step"].as_u64())
        .max()
        .ok_or_else(|| {
            deq_models::error::DeqError::data(metrics, "no training step records to draw")
        })? as usize;
    let (history, _) = History::from_records(&records, last, (last / 5).max(1));
    history.plot(png)?;
    Ok(history.train.len())
}

/// The exponential moving average (weight 0.05 on each new point) of the finite values of
/// `points`, taken of `into(y)` and mapped back with `back`.
fn moving_average(
    points: &[(f64, f64)],
    into: impl Fn(f64) -> f64,
    back: impl Fn(f64) -> f64,
) -> Vec<(f64, f64)> {
    let mut ema = None;
    points
        .iter()
        .map(|&(s, y)| (s, into(y)))
        .filter(|(_, y)| y.is_finite())
        .map(|(s, y)| {
            let e = ema.map_or(y, |e: f64| 0.95 * e + 0.05 * y);
            ema = Some(e);
            (s, back(e))
        })
        .collect()
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
