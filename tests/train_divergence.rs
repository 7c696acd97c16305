//! A learning rate high enough to diverge: the run continues to the end, counts the skipped
//! steps, recovers, and its checkpoints hold only finite values.

use deq_models::checkpoint::load_checkpoint;
use std::process::Command;

#[test]
fn a_diverging_run_skips_steps_recovers_and_saves_only_finite_weights() {
    let dir = std::env::temp_dir().join(format!("deq-diverge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let text = "the cat sat on the mat\na dog ran to the tree\n".repeat(60);
    for split in ["train", "valid", "test"] {
        std::fs::write(data.join(format!("{split}.txt")), &text).unwrap();
    }
    let out = dir.join("run");
    let status = Command::new(env!("CARGO_BIN_EXE_deq"))
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--steps",
            "40",
            "--batch",
            "4",
            "--seq-len",
            "8",
            "--lr",
            "1e9",
        ])
        .output()
        .expect("run deq");
    let stderr = String::from_utf8_lossy(&status.stderr);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "deq train failed:\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps = records.iter().filter(|r| r["kind"] == "train").count();
    let skipped = records
        .iter()
        .filter(|r| r["kind"] == "train" && r["skipped"] == true)
        .count();
    assert_eq!(steps, 40, "the run must reach its last step");
    assert!(
        skipped > 0,
        "a learning rate of 1e9 must produce skipped steps"
    );
    // Recovery: after 5 skipped steps in a row, the last good weights are reloaded with a
    // halved learning rate, and the log says so.
    let recovers: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["kind"] == "recover").collect();
    assert!(
        !recovers.is_empty(),
        "the run must recover (reload the last checkpoint) at least once:\n{metrics}"
    );
    for (i, r) in recovers.iter().enumerate() {
        let scale = r["lr_scale"].as_f64().expect("lr_scale");
        let expected = 0.5f64.powi(i as i32 + 1);
        assert!(
            (scale / expected - 1.0).abs() < 1e-12,
            "each recovery halves the rate, the {i}th gives {expected}: {r}"
        );
        assert!(r["step"].as_u64().is_some_and(|s| s <= 40), "{r}");
    }
    for name in ["last.safetensors", "best.safetensors"] {
        let path = out.join(name);
        if path.exists() {
            let ck = load_checkpoint(&path).unwrap();
            assert_eq!(
                ck.first_non_finite(),
                None,
                "{name} holds non-finite values"
            );
        }
    }
    assert!(out.join("last.safetensors").exists());
    println!(
        "{skipped} of {steps} steps skipped, {} recoveries",
        recovers.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
