//! `deq bench --baseline FILE`: the ratio column against the PyTorch peer's JSON
//! (`../shared/peer/deq_peer.py --out FILE`), measured on the same machine. Nothing from
//! another machine is printed: without a baseline file there is no PyTorch column.

use deq_models::error::{DeqError, Result};
use serde_json::Value;
use std::path::Path;

/// The peer's flat `{"key": number}` figures.
pub struct Baseline(Value);

impl Baseline {
    /// Reads and checks the peer's JSON.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DeqError::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            DeqError::config(format!(
                "--baseline {}: not JSON from the PyTorch peer: {e}",
                path.display()
            ))
        })?;
        if !v.is_object() {
            return Err(DeqError::config(format!(
                "--baseline {}: expected a JSON object of figures",
                path.display()
            )));
        }
        Ok(Baseline(v))
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).and_then(Value::as_f64)
    }

    fn sum(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.get(a)? + self.get(b)?)
    }

    /// Prints `figure, deq, PyTorch, ratio` for every figure both sides have.
    pub fn print_table(&self, results: &[Value]) {
        let mut rows: Vec<(String, f64, f64)> = Vec::new();
        let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
        for r in results {
            match r["workload"].as_str() {
                Some("w1") => {
                    for row in r["rows"].as_array().into_iter().flatten() {
                        let solver = row["solver"].as_str().unwrap_or("?");
                        let peer = if solver == "naive" { "fp" } else { solver };
                        let ours = num(row, "fwd_ms").zip(num(row, "bwd_ms"));
                        let theirs = self.sum(
                            &format!("w1_mlp.{peer}.fwd_ms"),
                            &format!("w1_mlp.{peer}.bwd_ms"),
                        );
                        if let (Some((f, b)), Some(t)) = (ours, theirs) {
                            rows.push((format!("W1 {solver} fwd+bwd ms"), f + b, t));
                        }
                    }
                }
                Some("w2") => {
                    for row in r["rows"].as_array().into_iter().flatten() {
                        let mode = row["mode"].as_str().unwrap_or("");
                        let kind = if mode.starts_with("DEQ") {
                            "deq"
                        } else {
                            "unrolled"
                        };
                        let key = |k: &str| format!("w2_transformer.{kind}.{k}");
                        if let (Some(f), Some(b), Some(t)) = (
                            num(row, "fwd_ms"),
                            num(row, "bwd_ms"),
                            self.sum(&key("fwd_ms"), &key("bwd_ms")),
                        ) {
                            rows.push((format!("W2 {kind} fwd+bwd ms"), f + b, t));
                        }
                        if let (Some(m), Some(t)) = (
                            num(row, "peak_bytes"),
                            self.get(&key("mem_torch_alloc_peak_mb")),
                        ) {
                            rows.push((format!("W2 {kind} peak MiB"), m / (1 << 20) as f64, t));
                        }
                    }
                }
                Some("w3") => {
                    if let (Some(s), Some(t)) = (num(r, "step_ms"), self.get("w3_lm_step.step_ms"))
                    {
                        rows.push(("W3 LM step ms".into(), s, t));
                    }
                }
                _ => {}
            }
        }
        println!("\nagainst the PyTorch baseline (ratio = deq / PyTorch; below 1: deq better)");
        println!(
            "{:<26} {:>10} {:>10} {:>7}",
            "figure", "deq", "PyTorch", "ratio"
        );
        for (name, ours, theirs) in rows {
            println!(
                "{name:<26} {ours:>10.2} {theirs:>10.2} {:>7.2}",
                ours / theirs
            );
        }
    }
}
