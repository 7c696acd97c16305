//! Training progress: a progress bar on a terminal, or a plain line every few seconds when
//! stdout is a file or a pipe (a log, CI, nohup); and the JSON-lines metrics log.

use deq_models::error::{DeqError, Result};
use deq_models::train::StepMetrics;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// A progress bar over the training steps with a running summary.
pub struct Progress {
    bar: ProgressBar,
    /// Set when stdout is not a terminal: print a line at most this often.
    plain: Option<Duration>,
    last_line: Option<Instant>,
    start: Instant,
    total: usize,
    first_step: usize,
    tokens: usize,
    seconds: f64,
    loss_ema: Option<f64>,
}

impl Progress {
    /// Progress over `total` steps starting at `done`; without a terminal on stdout, a line
    /// every `every` (zero: every step).
    pub fn new(total: usize, done: usize, every: Duration) -> Self {
        let terminal = std::io::stdout().is_terminal();
        let bar = if terminal {
            ProgressBar::new(total as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} ETA {eta}",
            )
            .expect("valid template"),
        );
        bar.set_position(done as u64);
        Progress {
            bar,
            plain: (!terminal).then_some(every),
            last_line: None,
            start: Instant::now(),
            total,
            first_step: done,
            tokens: 0,
            seconds: 0.0,
            loss_ema: None,
        }
    }

    /// Changes the step count of the run (a re-planned time budget).
    pub fn set_total(&mut self, total: usize) {
        self.total = total;
        self.bar.set_length(total as u64);
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
        let summary = format!(
            "loss {loss:.3} ppl {:.1} | fwd {} it {:.1e} | bwd {} it {:.1e} | {:.0} tok/s{}",
            loss.exp(),
            m.fwd_iters,
            m.fwd_resid,
            m.bwd_iters,
            m.bwd_resid,
            self.tokens_per_second(),
            if skipped_total > 0 {
                format!(" | {skipped_total} skipped")
            } else {
                String::new()
            }
        );
        match self.plain {
            Some(every) => {
                if self.last_line.is_none_or(|t| t.elapsed() >= every) || m.step == self.total {
                    self.last_line = Some(Instant::now());
                    println!(
                        "step {}/{}: {summary} | {}",
                        m.step,
                        self.total,
                        self.timing(m.step)
                    );
                }
            }
            None => {
                self.bar.set_message(summary);
                self.bar.set_position(m.step as u64);
            }
        }
    }

    /// "1m02s elapsed, ETA 4m10s" from the pace of this session's steps.
    fn timing(&self, step: usize) -> String {
        let elapsed = self.start.elapsed().as_secs_f64();
        let done = step.saturating_sub(self.first_step).max(1) as f64;
        let left = self.total.saturating_sub(step) as f64 * elapsed / done;
        format!("{} elapsed, ETA {}", clock(elapsed), clock(left))
    }

    /// Prints a line above the bar (plainly on stdout without a terminal).
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

/// Seconds as "3h04m", "4m10s" or "12s".
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
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

/// The records of a metrics file, in order (lines that are not JSON objects are skipped: a
/// crash can leave a partial last line).
pub fn read_records(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DeqError::io(path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object)
        .collect())
}
