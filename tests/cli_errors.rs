//! The `deq` binary over a table of bad inputs: each exits with status 2, names the problem,
//! never panics, and leaves no new file behind.

use deq_models::checkpoint::{load_checkpoint, save_checkpoint};
use deq_models::data::{Corpus, Level};
use deq_models::train::{TrainConfig, Trainer};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deq-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_corpus(dir: &Path, text: &str) {
    for split in ["train", "valid", "test"] {
        std::fs::write(dir.join(format!("{split}.txt")), text).unwrap();
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Runs `deq args…` in `dir`; asserts status 2, `expect` in stderr, no panic, no new file.
fn bad(dir: &Path, args: &[&str], expect: &str) {
    let before = files_under(dir);
    let out = Command::new(env!("CARGO_BIN_EXE_deq"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run deq");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "deq {args:?}: status {:?}, stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.to_lowercase().contains(&expect.to_lowercase()),
        "deq {args:?}: stderr does not mention {expect:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "deq {args:?} panicked:\n{stderr}"
    );
    assert_eq!(files_under(dir), before, "deq {args:?} left files behind");
}

/// A small valid checkpoint for the corpus in `data`.
fn checkpoint(data: &Path, path: &Path) {
    let corpus = Corpus::load_dir(data, Level::Word).unwrap();
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.model.vocab = corpus.vocab.len();
    let t = Trainer::new(cfg);
    save_checkpoint(path, &t.to_checkpoint(&corpus.vocab)).unwrap();
}

#[test]
fn bad_inputs_exit_2_with_a_clear_message_and_no_new_files() {
    let dir = scratch("bad");
    let good = dir.join("good");
    std::fs::create_dir_all(&good).unwrap();
    write_corpus(&good, "a b c d e f g\nb c d e f g a\n".repeat(40).as_str());
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let empty_files = dir.join("empty_files");
    std::fs::create_dir_all(&empty_files).unwrap();
    write_corpus(&empty_files, "");
    let binary = dir.join("binary");
    std::fs::create_dir_all(&binary).unwrap();
    write_corpus(&binary, "abc\0\u{1}\u{2}def\n");
    let huge = dir.join("huge");
    std::fs::create_dir_all(&huge).unwrap();
    write_corpus(&huge, &("x".repeat(2 << 20) + "\n"));
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    write_corpus(&other, "p q r s\n".repeat(40).as_str());
    let ck = dir.join("model.safetensors");
    checkpoint(&good, &ck);
    let bytes = std::fs::read(&ck).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // A NaN written with valid checksums (a run that saved bad weights), and a flipped bit.
    let nan = dir.join("nan.safetensors");
    {
        let mut c = load_checkpoint(&ck).unwrap();
        let (_, t) = c.tensors.last_mut().unwrap();
        let n = t.numel();
        t.data_mut()[n - 1] = f32::NAN;
        save_checkpoint(&nan, &c).unwrap();
    }
    let flipped = dir.join("flipped.safetensors");
    {
        let mut b = bytes.clone();
        let n = b.len();
        b[n - 3] ^= 0x04;
        std::fs::write(&flipped, b).unwrap();
    }
    let foreign = dir.join("foreign.safetensors");
    std::fs::write(&foreign, b"PK\x03\x04 this is a zip file, not a checkpoint").unwrap();
    let cfg_unknown = dir.join("unknown_key.json");
    let mut cfg_json: serde_json::Value =
        serde_json::to_value(TrainConfig::preset("tiny").unwrap()).unwrap();
    cfg_json["learning_rat"] = serde_json::json!(0.1);
    std::fs::write(&cfg_unknown, cfg_json.to_string()).unwrap();
    let readonly = dir.join("readonly");
    std::fs::create_dir_all(&readonly).unwrap();
    std::fs::write(
        readonly.join("blocker"),
        "a file where a directory should be",
    )
    .unwrap();

    let d = |p: &Path| p.to_str().unwrap().to_string();
    let (good_s, ck_s) = (d(&good), d(&ck));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["train".into(), "--data".into(), d(&dir.join("missing"))],
            "missing",
        ),
        (vec!["train".into(), "--data".into(), d(&empty)], "train"),
        (
            vec!["train".into(), "--data".into(), d(&empty_files)],
            "empty",
        ),
        (vec!["train".into(), "--data".into(), d(&binary)], "binary"),
        (vec!["train".into(), "--data".into(), d(&huge)], "line"),
        (
            vec![
                "train".into(),
                "--preset".into(),
                "gigantic".into(),
                "--data".into(),
                good_s.clone(),
            ],
            "unknown preset",
        ),
        (
            vec![
                "train".into(),
                "--config".into(),
                d(&cfg_unknown),
                "--data".into(),
                good_s.clone(),
            ],
            "learning_rat",
        ),
        (
            vec![
                "train".into(),
                "--steps".into(),
                "0".into(),
                "--data".into(),
                good_s.clone(),
            ],
            "steps",
        ),
        (
            vec![
                "train".into(),
                "--batch".into(),
                "0".into(),
                "--data".into(),
                good_s.clone(),
            ],
            "batch",
        ),
        (vec!["train".into(), "--batch".into(), "-3".into()], "-3"),
        (
            vec!["train".into(), "--no-such-flag".into()],
            "no-such-flag",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                good_s.clone(),
                "--steps".into(),
                "1".into(),
                "--out".into(),
                d(&readonly.join("blocker").join("run")),
            ],
            "blocker",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                good_s.clone(),
                "--resume".into(),
                d(&truncated),
            ],
            "truncated",
        ),
        // Sizes are checked against the data and the machine before anything is allocated.
        (
            vec!["train".into(), "--seq-len".into(), "100000000".into()],
            "--seq-len",
        ),
        (
            vec![
                "train".into(),
                "--batch".into(),
                "1".into(),
                "--seq-len".into(),
                "900000".into(),
            ],
            "available",
        ),
        (
            vec![
                "eval".into(),
                "--checkpoint".into(),
                ck_s.clone(),
                "--data".into(),
                good_s.clone(),
                "--seq-len".into(),
                "100000".into(),
            ],
            "eval.seq_len",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                good_s.clone(),
                "--save-every=-1".into(),
            ],
            "--save-every",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                good_s.clone(),
                "--stop-after".into(),
                "0".into(),
            ],
            "--stop-after",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                good_s.clone(),
                "--name".into(),
                "a/b".into(),
            ],
            "--name",
        ),
        (
            vec![
                "train".into(),
                "--preset".into(),
                "tiny".into(),
                "--config".into(),
                d(&cfg_unknown),
            ],
            "--config",
        ),
        (
            vec![
                "eval".into(),
                "--checkpoint".into(),
                d(&truncated),
                "--data".into(),
                good_s.clone(),
            ],
            "truncated",
        ),
        (
            vec![
                "eval".into(),
                "--checkpoint".into(),
                d(&foreign),
                "--data".into(),
                good_s.clone(),
            ],
            "foreign",
        ),
        (
            vec![
                "eval".into(),
                "--checkpoint".into(),
                d(&nan),
                "--data".into(),
                good_s.clone(),
            ],
            "NaN or infinite",
        ),
        (
            vec![
                "eval".into(),
                "--checkpoint".into(),
                d(&flipped),
                "--data".into(),
                good_s.clone(),
            ],
            "does not match its checksum",
        ),
        (
            vec![
                "eval".into(),
                "--checkpoint".into(),
                d(&dir.join("nope.safetensors")),
                "--data".into(),
                good_s.clone(),
            ],
            "nope.safetensors",
        ),
        (
            vec![
                "eval".into(),
                "--checkpoint".into(),
                ck_s.clone(),
                "--data".into(),
                d(&other),
            ],
            "vocabulary",
        ),
        (
            vec![
                "eval".into(),
                "--checkpoint".into(),
                ck_s.clone(),
                "--data".into(),
                good_s.clone(),
                "--iters".into(),
                "0".into(),
            ],
            "max_iter must be ≥ 1",
        ),
        (
            vec![
                "eval".into(),
                "--checkpoint".into(),
                ck_s.clone(),
                "--data".into(),
                good_s.clone(),
                "--tol=-1".into(),
            ],
            "tol must be finite",
        ),
        (
            vec![
                "train".into(),
                "--preset".into(),
                "ptb-1h".into(),
                "--model".into(),
                "trellisnet".into(),
            ],
            "no TrellisNet twin",
        ),
        (
            vec![
                "generate".into(),
                "--checkpoint".into(),
                ck_s.clone(),
                "--data".into(),
                good_s.clone(),
                "--temperature".into(),
                "0".into(),
            ],
            "temperature",
        ),
    ];
    for (args, expect) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bad(&dir, &args, expect);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--device`: a malformed name is a usage error everywhere; `cuda` on a machine without a
/// usable GPU is "no CUDA driver found" / "no CUDA device" with status 2, for every command
/// that takes the flag (on a GPU machine that half is skipped, saying so).
#[test]
fn device_flag_errors_exit_2_with_a_clear_message() {
    let dir = scratch("device");
    for cmd in ["train", "eval", "bench"] {
        bad(
            &dir,
            &[cmd, "--device", "cuda:x"],
            "expected cpu, cuda or cuda:N",
        );
    }
    match deq_autograd::Device::Cuda(0).open() {
        Ok(()) => eprintln!("skipped the no-GPU half: cuda:0 is available here"),
        Err(e) => {
            let expect = if e.to_string().contains("no CUDA driver") {
                "no CUDA driver found"
            } else {
                "no CUDA"
            };
            bad(&dir, &["train", "--device", "cuda"], expect);
            bad(
                &dir,
                &["eval", "--device", "cuda", "--checkpoint", "x"],
                expect,
            );
            bad(&dir, &["bench", "--device", "cuda:0"], expect);
        }
    }
    // A device index beyond any machine's count is always an error.
    bad(&dir, &["train", "--device", "cuda:4096"], "no CUDA");
    let _ = std::fs::remove_dir_all(&dir);
}
