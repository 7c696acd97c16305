//! `deq plot`: redraws a run's `training.png` from its `metrics.jsonl` (after a crash, or to
//! draw an older run with the current panels).

use super::train::redraw;
use clap::Args;
use deq_models::error::{DeqError, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `deq plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// The run's directory (holding metrics.jsonl).
    run: PathBuf,
    /// Where to write the PNG [default: RUN/training.png].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `deq plot`.
pub fn run(a: PlotArgs) -> Result<ExitCode> {
    let metrics = a.run.join("metrics.jsonl");
    if !metrics.is_file() {
        return Err(DeqError::data(
            &metrics,
            "not found (is this a run directory?)",
        ));
    }
    let png = a.out.unwrap_or_else(|| a.run.join("training.png"));
    let steps = redraw(&metrics, &png)?;
    println!("drew {steps} steps into {}", png.display());
    Ok(ExitCode::SUCCESS)
}
