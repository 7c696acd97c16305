//! Non-finite streaks: which checkpoint a run may go back to.
//!
//! A step whose loss, gradient or forward solve is not finite is skipped (the weights do not
//! change). After [`MAX_SKIPS`] skips in a row the run reloads one of its own checkpoints and
//! halves the learning rate. Skipped steps leave the weights as they were, so the checkpoint
//! saved just before the streak holds the very weights that fail, and a reload of it would
//! replay the same failures exactly: the run goes back to the newest checkpoint saved at least
//! one good step before the streak began (`last.safetensors`, else `previous.safetensors`, else
//! the checkpoint it resumed from). No checkpoint is saved inside a streak. With none to go
//! back to, the run stops with an error that says so; it never reads another run's files.

use deq_models::train::StepMetrics;
use std::path::{Path, PathBuf};

/// Consecutive skipped steps after which the run reloads weights.
pub const MAX_SKIPS: usize = 5;

/// A checkpoint of this run: where, and after how many steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    /// The file.
    pub path: PathBuf,
    /// Its step.
    pub step: usize,
}

/// The run's checkpoints (newest first) and the current streak of skipped steps.
#[derive(Debug, Default)]
pub struct Recovery {
    saved: Vec<Saved>,
    streak_start: Option<usize>,
}

/// `p` with its directory canonicalised, so that two spellings of one file compare equal.
fn key(p: &Path) -> PathBuf {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), p.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => p.to_path_buf(),
    }
}

impl Recovery {
    /// A run that resumed from `resumed` (its checkpoint and step) or started afresh.
    pub fn new(resumed: Option<(PathBuf, usize)>) -> Self {
        Recovery {
            saved: resumed
                .map(|(path, step)| Saved {
                    path: key(&path),
                    step,
                })
                .into_iter()
                .collect(),
            streak_start: None,
        }
    }

    /// Follows the streak of skipped steps.
    pub fn observe(&mut self, m: &StepMetrics) {
        if m.skipped {
            self.streak_start.get_or_insert(m.step);
        } else {
            self.streak_start = None;
        }
    }

    /// The first skipped step of the current streak.
    pub fn streak_start(&self) -> Option<usize> {
        self.streak_start
    }

    /// The weights were reloaded: the streak is over.
    pub fn reset_streak(&mut self) {
        self.streak_start = None;
    }

    /// `last` is about to be renamed to `previous`.
    pub fn rotated(&mut self, last: &Path, previous: &Path) {
        let (last, previous) = (key(last), key(previous));
        self.saved.retain(|s| s.path != previous);
        for s in &mut self.saved {
            if s.path == last {
                s.path = previous.clone();
            }
        }
    }

    /// A checkpoint of step `step` was written to `path`.
    pub fn saved(&mut self, path: &Path, step: usize) {
        let path = key(path);
        self.saved.retain(|s| s.path != path);
        self.saved.insert(0, Saved { path, step });
    }

    /// The checkpoints saved at least one good step before the streak that began at
    /// `streak_start`, newest first.
    pub fn candidates(&self, streak_start: usize) -> Vec<Saved> {
        self.saved
            .iter()
            .filter(|s| s.step + 1 < streak_start)
            .cloned()
            .collect()
    }

    /// Every checkpoint known, newest first (for the error message).
    pub fn known(&self) -> &[Saved] {
        &self.saved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: usize, skipped: bool) -> StepMetrics {
        StepMetrics {
            step,
            skipped,
            ..Default::default()
        }
    }

    #[test]
    fn the_checkpoint_just_before_a_streak_is_not_a_candidate() {
        let dir = std::env::temp_dir();
        let (last, prev) = (
            dir.join("last.safetensors"),
            dir.join("previous.safetensors"),
        );
        let mut r = Recovery::new(None);
        r.saved(&last, 4);
        r.rotated(&last, &prev);
        r.saved(&last, 8);
        for s in 9..=13 {
            r.observe(&step(s, true));
        }
        assert_eq!(r.streak_start(), Some(9));
        // Step 8's weights are the failing ones; step 4's had good steps after them.
        assert_eq!(
            r.candidates(9),
            [Saved {
                path: key(&prev),
                step: 4
            }]
        );
        r.observe(&step(14, false));
        assert_eq!(r.streak_start(), None);
        assert_eq!(r.candidates(20).len(), 2);
        assert_eq!(Recovery::new(None).candidates(100), []);
    }
}
