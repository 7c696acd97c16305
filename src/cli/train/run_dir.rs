//! One directory per run: `runs/<name or start time>` (or `--out DIR`), with `runs/latest`
//! pointing at the newest. A fresh run never writes into, or reads from, a directory that holds
//! another run.

use deq_models::error::{DeqError, Result};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where runs go by default.
pub const RUNS: &str = "runs";
/// The link in [`RUNS`] to the newest run.
pub const LATEST: &str = "latest";

/// A run's directory and the files in it.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// The directory.
    pub path: PathBuf,
}

impl RunDir {
    /// The newest checkpoint (saved at evaluations, every `--save-every` minutes, at the end).
    pub fn last(&self) -> PathBuf {
        self.path.join("last.safetensors")
    }
    /// The checkpoint `last` replaced (recovery may need weights older than the newest).
    pub fn previous(&self) -> PathBuf {
        self.path.join("previous.safetensors")
    }
    /// The checkpoint of the lowest validation loss.
    pub fn best(&self) -> PathBuf {
        self.path.join("best.safetensors")
    }
    /// The JSON-lines log.
    pub fn metrics(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }
    /// The learning curves.
    pub fn plot(&self) -> PathBuf {
        self.path.join("training.png")
    }

    /// Whether `dir` holds a run (a metrics log or a checkpoint).
    fn holds_a_run(dir: &Path) -> bool {
        let d = RunDir {
            path: dir.to_path_buf(),
        };
        [d.metrics(), d.last(), d.best(), d.previous()]
            .iter()
            .any(|p| p.exists())
    }
}

/// The directory of a run: `--out`, else `runs/<--name>`, else (resuming) the checkpoint's own
/// directory, else `runs/<start time>`.
pub fn choose(out: Option<&Path>, name: Option<&str>, resumed: Option<&Path>) -> Result<PathBuf> {
    if let Some(o) = out {
        return Ok(o.to_path_buf());
    }
    if let Some(n) = name {
        let one_component = Path::new(n).components().count() == 1
            && !matches!(n, "." | ".." | LATEST)
            && !n.contains(['/', '\\']);
        if !one_component || n.is_empty() {
            return Err(DeqError::config(format!(
                "--name {n:?} must be a plain directory name (not {LATEST:?}, no path separators)"
            )));
        }
        return Ok(Path::new(RUNS).join(n));
    }
    if let Some(ck) = resumed {
        let dir = match ck.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // The real directory: resuming through `runs/latest` continues the run it points at.
        return std::fs::canonicalize(dir).map_err(|e| DeqError::io(dir, e));
    }
    let stamp = timestamp(SystemTime::now());
    let mut path = Path::new(RUNS).join(&stamp);
    let mut n = 2;
    while path.exists() {
        path = Path::new(RUNS).join(format!("{stamp}-{n}"));
        n += 1;
    }
    Ok(path)
}

/// Creates the run's directory. A fresh run (`resumed_from: None`) or a run resumed into
/// another directory refuses a directory that already holds a run.
pub fn create(path: &Path, resumed_from: Option<&Path>) -> Result<RunDir> {
    let own = resumed_from
        .and_then(Path::parent)
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .is_some_and(|p| same_dir(p, path));
    if !own && RunDir::holds_a_run(path) {
        return Err(DeqError::config(format!(
            "{} already holds a run; continue it with --resume {}/last.safetensors or choose \
             another --out or --name",
            path.display(),
            path.display()
        )));
    }
    std::fs::create_dir_all(path).map_err(|e| DeqError::io(path, e))?;
    Ok(RunDir {
        path: path.to_path_buf(),
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Points `runs/latest` at `dir` when `dir` lives directly in `runs/`. A `runs/latest` that is
/// a real directory (written by an older `deq`) is first renamed to `runs/latest-before-<time>`;
/// the message says so.
#[cfg(unix)]
pub fn point_latest(dir: &RunDir) -> Result<Option<String>> {
    let runs = Path::new(RUNS);
    let Some(parent) = dir.path.parent() else {
        return Ok(None);
    };
    let Some(name) = dir.path.file_name() else {
        return Ok(None);
    };
    if !runs.is_dir() || !same_dir(parent, runs) || name == std::ffi::OsStr::new(LATEST) {
        return Ok(None);
    }
    let latest = runs.join(LATEST);
    let mut note = None;
    if let Ok(meta) = std::fs::symlink_metadata(&latest) {
        if meta.is_dir() {
            let moved = runs.join(format!("latest-before-{}", timestamp(SystemTime::now())));
            std::fs::rename(&latest, &moved).map_err(|e| DeqError::io(&latest, e))?;
            note = Some(format!(
                "moved the run that was in {} (a directory from an older deq) to {}",
                latest.display(),
                moved.display()
            ));
        }
    }
    let tmp = runs.join(format!(".{LATEST}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp).map_err(|e| DeqError::io(&tmp, e))?;
    std::fs::rename(&tmp, &latest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DeqError::io(&latest, e)
    })?;
    Ok(note)
}

/// Without symbolic links there is no `runs/latest`.
#[cfg(not(unix))]
pub fn point_latest(_dir: &RunDir) -> Result<Option<String>> {
    Ok(None)
}

/// UTC `YYYYMMDD-HHMMSS` of `t`.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(UNIX_EPOCH), "19700101-000000");
        // 2000-02-29 12:34:56 UTC (a leap day) and 2025-01-14 09:30:12 UTC.
        let at = |s| timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(951_827_696), "20000229-123456");
        assert_eq!(at(1_736_847_012), "20250114-093012");
    }
}
