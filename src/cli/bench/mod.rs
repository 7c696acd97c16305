//! `deq bench`: the workloads of `../shared/BENCH.md` (W1 tanh DEQ with each solver, W2 one
//! DEQ-Transformer block against its unrolled twin, W3 one language-model training step),
//! timed as medians after a warm-up, with peak heap from a counting allocator.

pub mod alloc;
mod block;
mod timing;
mod w1;
mod w2;
mod w3;

use clap::{Args, ValueEnum};
use deq_models::error::{DeqError, Result};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Which workload.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Workload {
    /// Tanh DEQ, each solver.
    W1,
    /// One DEQ-Transformer block, DEQ vs unrolled.
    W2,
    /// One language-model training step.
    W3,
    /// All three.
    All,
}

/// Options of `deq bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workload to run.
    #[arg(long, value_enum, default_value = "all")]
    workload: Workload,
    /// Timed repetitions (median reported), after one warm-up.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// The machine's peak f32 GFLOP/s, for the "% of peak" column.
    #[arg(long, default_value_t = 537.0)]
    peak_gflops: f64,
    /// Also write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `deq bench`.
pub fn run(a: BenchArgs) -> Result<ExitCode> {
    if a.reps == 0 {
        return Err(DeqError::config("--reps must be at least 1"));
    }
    if !(a.peak_gflops.is_finite() && a.peak_gflops > 0.0) {
        return Err(DeqError::config("--peak-gflops must be > 0"));
    }
    let threads = rayon::current_num_threads();
    println!(
        "deq bench: {}, {threads} threads, peak {} GFLOP/s f32\n",
        cpu_model(),
        a.peak_gflops
    );
    let mut results = Vec::new();
    let all = a.workload == Workload::All;
    if all || a.workload == Workload::W1 {
        results.push(w1::bench(a.reps, a.peak_gflops));
        println!();
    }
    if all || a.workload == Workload::W2 {
        results.push(w2::bench(a.reps, a.peak_gflops));
        println!();
    }
    if all || a.workload == Workload::W3 {
        results.push(w3::bench(a.reps, a.peak_gflops));
    }
    if let Some(path) = &a.json {
        let doc = json!({
            "machine": {"cpu": cpu_model(), "threads": threads, "peak_gflops": a.peak_gflops},
            "git_revision": option_env!("DEQ_GIT_REVISION").unwrap_or("unknown"),
            "workloads": results,
        });
        let text = serde_json::to_string_pretty(&doc).expect("serialisable");
        std::fs::write(path, text).map_err(|e| DeqError::io(path, e))?;
    }
    Ok(ExitCode::SUCCESS)
}
