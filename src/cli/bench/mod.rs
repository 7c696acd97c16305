//! `deq bench`: the workloads of `../shared/BENCH.md` (W1 tanh DEQ with each solver, W2 one
//! DEQ-Transformer block against its unrolled twin, W3 one language-model training step),
//! timed as medians after a warm-up, with peak heap from a counting allocator.

pub mod alloc;
mod baseline;
mod block;
mod nominal;
mod sgemm;
mod timing;
mod w1;
mod w2;
mod w3;

use clap::{Args, ValueEnum};
use deq_autograd::{Device, Tensor};
use deq_models::error::{DeqError, Result};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

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
    /// The PyTorch peer's JSON from the same machine (`deq_peer.py --out FILE`): adds the
    /// ratio table.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Also write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write PNG plots (W1 residual traces per solver, W2 memory against depth) into DIR.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Compute device: cpu, cuda or cuda:N. On a GPU, times wait for the device and memory
    /// is the peak of the caching allocator.
    #[arg(long, default_value = "cpu")]
    device: Device,
}

static DEVICE: OnceLock<Device> = OnceLock::new();

/// The device the workloads run on.
pub(crate) fn device() -> Device {
    DEVICE.get().copied().unwrap_or_default()
}

/// `t` on the bench device.
pub(crate) fn on_device(t: Tensor<f32>) -> Tensor<f32> {
    t.to_device(device())
        .expect("the bench device was opened at start")
}

/// Zeros on the bench device.
pub(crate) fn zeros(shape: &[usize]) -> Tensor<f32> {
    Tensor::zeros_on(shape, device())
}

/// The cotangent 1 of a scalar loss, on the bench device.
pub(crate) fn one() -> Tensor<f32> {
    on_device(Tensor::scalar(1.0))
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
    let baseline = a
        .baseline
        .as_deref()
        .map(baseline::Baseline::load)
        .transpose()?;
    a.device.open()?;
    let _ = DEVICE.set(a.device);
    let threads = rayon::current_num_threads();
    let (sgemm, sgemm_each) = sgemm::sgemm_gflops(threads);
    println!(
        "deq bench: {}, {threads} threads, on {}",
        cpu_model(),
        a.device.describe()
    );
    println!(
        "faer sgemm at the W2 linear shapes: {sgemm:.1} GFLOP/s (per shape: {})\n",
        sgemm_each
            .iter()
            .map(|g| format!("{g:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let device_sgemm = device_sgemm(a.device)?;
    if let Some((g, each)) = &device_sgemm {
        println!(
            "cuBLAS sgemm at the same shapes on {}: {g:.1} GFLOP/s (per shape: {}); the \
             workloads' \"of sgemm\" figures are against it\n",
            a.device,
            each.iter()
                .map(|g| format!("{g:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // A workload's efficiency is against the yardstick of the device it runs on.
    let yardstick = device_sgemm.as_ref().map_or(sgemm, |d| d.0);
    let mut results = Vec::new();
    let all = a.workload == Workload::All;
    if all || a.workload == Workload::W1 {
        results.push(w1::bench(a.reps, yardstick));
        println!();
    }
    if all || a.workload == Workload::W2 {
        results.push(w2::bench(a.reps, yardstick));
        println!();
    }
    if all || a.workload == Workload::W3 {
        results.push(w3::bench(a.reps, yardstick));
    }
    if let Some(b) = &baseline {
        b.print_table(&results);
    }
    if let Some(dir) = &a.plot {
        plots(dir, &results)?;
    }
    if let Some(path) = &a.json {
        let doc = json!({
            "machine": {"cpu": cpu_model(), "threads": threads, "sgemm_gflops": sgemm,
                "sgemm_gflops_per_shape": sgemm_each, "device": a.device.describe(),
                "device_sgemm_gflops": device_sgemm.as_ref().map(|d| d.0),
                "device_sgemm_gflops_per_shape": device_sgemm.as_ref().map(|d| d.1.clone())},
            "git_revision": env!("DEQ_GIT_REVISION"),
            "workloads": results,
        });
        let text = serde_json::to_string_pretty(&doc).expect("serialisable");
        std::fs::write(path, text).map_err(|e| DeqError::io(path, e))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// cuBLAS's sgemm figure on a CUDA bench device (`None` on the CPU, whose yardstick is faer's).
fn device_sgemm(device: Device) -> Result<Option<(f64, Vec<f64>)>> {
    match device {
        Device::Cpu => Ok(None),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => sgemm::cublas_sgemm_gflops(n)
            .map(Some)
            .map_err(|e| DeqError::config(format!("cuBLAS sgemm on cuda:{n}: {e}"))),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Ok(None),
    }
}

fn plots(dir: &std::path::Path, results: &[serde_json::Value]) -> Result<()> {
    use super::plot::{write_png, Panel, Series};
    std::fs::create_dir_all(dir).map_err(|e| DeqError::io(dir, e))?;
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    for r in results {
        match r["workload"].as_str() {
            Some("w1") => {
                let series = r["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|row| Series {
                        label: row["solver"].as_str().unwrap_or("?").to_string(),
                        points: row["fwd_trace"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .enumerate()
                            .map(|(i, v)| (i as f64, num(v)))
                            .collect(),
                    })
                    .collect();
                let panel = Panel {
                    title: "W1 forward residuals (first sample)".into(),
                    x_label: "f evaluation".into(),
                    y_label: "relative residual".into(),
                    log_y: true,
                    series,
                };
                write_png(&dir.join("w1_residuals.png"), &[panel])?;
            }
            Some("w2") => {
                let curve = r["memory_curve"].as_array().cloned().unwrap_or_default();
                let mib = |key: &str| -> Vec<(f64, f64)> {
                    curve
                        .iter()
                        .map(|c| (num(&c["depth"]), num(&c[key]) / (1 << 20) as f64))
                        .collect()
                };
                let panel = Panel {
                    title: "W2 peak heap of one training step".into(),
                    x_label: "depth (unrolled) / iterations (DEQ)".into(),
                    y_label: "MiB".into(),
                    log_y: false,
                    series: vec![
                        Series {
                            label: "DEQ".into(),
                            points: mib("deq_bytes"),
                        },
                        Series {
                            label: "unrolled".into(),
                            points: mib("unrolled_bytes"),
                        },
                    ],
                };
                write_png(&dir.join("w2_memory.png"), &[panel])?;
            }
            _ => {}
        }
    }
    Ok(())
}
