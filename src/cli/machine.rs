//! The machine's side of the size checks: a computation whose lower bound of memory exceeds
//! what the machine has available is refused with an `error:` line before anything is
//! allocated.

use deq_autograd::Device;
use deq_models::error::{DeqError, Result};
use deq_models::sizes::MemoryBound;

/// Bytes of memory available to a new allocation: `MemAvailable` of `/proc/meminfo` on Linux;
/// `None` where it cannot be read.
pub fn available_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// `bytes` as "432.1 GB".
pub fn human(bytes: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < units.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", units[unit])
}

/// Ok when `bound` (what `what` needs at least) fits the memory available on the host. On a
/// GPU the host check is skipped (the tensors live on the device; its allocator reports an
/// exhausted device as an error).
pub fn check_fits(bound: &MemoryBound, what: &str, device: Device) -> Result<()> {
    if device != Device::Cpu {
        return Ok(());
    }
    match available_bytes() {
        Some(avail) if bound.bytes > avail => Err(DeqError::config(format!(
            "{what} needs at least {} (the largest part: {}), but this machine has {} \
             available; use a smaller batch or segment length",
            human(bound.bytes),
            bound.largest,
            human(avail)
        ))),
        _ => Ok(()),
    }
}
