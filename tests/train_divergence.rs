//! A learning rate high enough to diverge at once: the run stops with status 2 and an error
//! saying it has no checkpoint of its own to reload (it never reads another run's files), and
//! it leaves no checkpoint behind.

use std::process::Command;

#[test]
fn a_run_diverging_before_its_first_save_stops_with_an_error_that_says_so() {
    let dir = std::env::temp_dir().join(format!("deq-diverge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let text = "the cat sat on the mat\na dog ran to the tree\n".repeat(60);
    for split in ["train", "valid", "test"] {
        std::fs::write(data.join(format!("{split}.txt")), &text).unwrap();
    }
    let out = dir.join("run");
    let run = Command::new(env!("CARGO_BIN_EXE_deq"))
        .args(["train", "--data", data.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .args(["--steps", "40", "--batch", "4", "--seq-len", "8"])
        .args(["--eval-batch", "4", "--eval-seq-len", "8", "--lr", "1e30"])
        .output()
        .expect("run deq");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("error: training stopped") && stderr.contains("no checkpoint of its own"),
        "{stderr}"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let skipped = records
        .iter()
        .filter(|r| r["kind"] == "train" && r["skipped"] == true)
        .count();
    assert_eq!(skipped, 5, "it stops at the fifth non-finite step in a row");
    assert_eq!(records.last().unwrap()["kind"], "stopped");
    for name in ["last", "previous", "best"] {
        assert!(!out.join(format!("{name}.safetensors")).exists(), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
