//! The training progress bar and the JSON-lines metrics log.

use deq_models::error::{DeqError, Result};
use deq_models::train::StepMetrics;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// A progress bar over the training steps with a running summary.
pub struct Progress {
    bar: ProgressBar,
    tokens: usize,
    seconds: f64,
    loss_ema: Option<f64>,
}

impl Progress {
    /// A bar for `total` steps starting at `done`.
    pub fn new(total: usize, done: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} ETA {eta}",
            )
            .expect("valid template"),
        );
        bar.set_position(done as u64);
        Progress {
            bar,
            tokens: 0,
            seconds: 0.0,
            loss_ema: None,
        }
    }

    /// Shows one step.
    pub fn update(&mut self, m: &StepMetrics, skipped_total: usize) {
        self.tokens += m.tokens;
        self.seconds += m.seconds;
        if m.loss.is_finite() {
            self.loss_ema = Some(match self.loss_ema {
                None => m.loss,
                Some(e) => 0.95 * e + 0.05 * m.loss,
            });
        }
        let loss = self.loss_ema.unwrap_or(f64::NAN);
        self.bar.set_message(format!(
            "loss {loss:.3} ppl {:.1} | fwd {} it {:.1e} | bwd {} it {:.1e} | {:.0} tok/s{}",
            loss.exp(),
            m.fwd_iters,
            m.fwd_resid,
            m.bwd_iters,
            m.bwd_resid,
            self.tokens as f64 / self.seconds.max(1e-9),
            if skipped_total > 0 {
                format!(" | {skipped_total} skipped")
            } else {
                String::new()
            }
        ));
        self.bar.set_position(m.step as u64);
    }

    /// Prints a line above the bar (plainly on stdout when the bar is hidden because the
    /// output is not a terminal).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Tokens per second so far.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Appends JSON lines to `metrics.jsonl`.
pub struct MetricsLog {
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DeqError::io(path, e))?;
        Ok(MetricsLog {
            out: BufWriter::new(file),
        })
    }

    /// Writes one record.
    pub fn write(&mut self, value: &serde_json::Value) {
        let _ = writeln!(self.out, "{value}");
        let _ = self.out.flush();
    }
}
