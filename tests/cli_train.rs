//! `deq train`, `eval` and `generate` on their success paths, and the training protocol:
//! the final figures come from the best checkpoint chosen on the whole validation split, each
//! run has its own directory and never touches another, a resumed run reproduces an
//! uninterrupted one exactly and says where it resumed, `--steps` extends a resumed run by the
//! documented rule, flags that would change a resumed run are refused, `--print-config` writes
//! what `--config` reads.

use deq_models::config::TrainConfig;
use deq_models::optim::LrSchedule;
use deq_models::CellConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deq-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A corpus whose validation split has other frequencies than the training one (mostly `z`
/// and `y` against mostly `x`): as the model learns the training distribution its validation
/// loss rises from the first evaluation on, so the best checkpoint is the first one.
fn write_data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let train = "x x x x x x x x x x x y z\n";
    std::fs::write(data.join("train.txt"), train.repeat(50)).unwrap();
    std::fs::write(
        data.join("valid.txt"),
        "z y z y z y z y z y z y z\n".repeat(12),
    )
    .unwrap();
    std::fs::write(data.join("test.txt"), train.repeat(10)).unwrap();
    data
}

/// A small DEQ-Transformer: 12 steps of 4×8 tokens, evaluations at steps 4, 8 and 12 with 2
/// streams of 8-token segments.
fn write_config(dir: &Path) -> PathBuf {
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.model.vocab = 4;
    cfg.model.d_embed = 16;
    if let CellConfig::Transformer(c) = &mut cfg.model.cell {
        (c.d_model, c.d_inner, c.mem_len) = (16, 32, 6);
    }
    (cfg.batch, cfg.seq_len) = (4, 8);
    cfg.set_steps(12);
    cfg.set_lr(1e-2);
    cfg.pretrain_steps = 3;
    cfg.eval_every = 4;
    cfg.eval.batch = 2;
    cfg.eval.seq_len = 8;
    cfg.eval.mem_len = Some(6);
    cfg.validate().unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    path
}

fn deq(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deq"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run deq")
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = deq(cwd, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "deq {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn records(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(snapshot(&p));
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn the_final_figures_come_from_the_best_checkpoint_chosen_on_the_whole_validation_split() {
    let dir = scratch("best");
    let (data, cfg) = (write_data(&dir), write_config(&dir));
    let run = dir.join("run");
    let stdout = ok(
        &dir,
        &[
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&data),
            "--out",
            s(&run),
        ],
    );
    let recs = records(&run);
    let valid = of_kind(&recs, "valid");
    let steps: Vec<u64> = valid.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [4, 8, 12]);
    // 168 validation tokens in 2 streams of 84: every token but each stream's first is scored.
    for r in &valid {
        assert_eq!(
            (r["scored"].as_u64(), r["tokens"].as_u64()),
            (Some(166), Some(168))
        );
    }
    let loss = |r: &Value| r["loss"].as_f64().unwrap();
    assert!(
        loss(valid[0]) < loss(valid[2]),
        "the data is built for a rising validation loss: {valid:?}"
    );
    let best = valid
        .iter()
        .min_by(|a, b| loss(a).total_cmp(&loss(b)))
        .unwrap();
    let fin = of_kind(&recs, "final");
    assert_eq!(fin.len(), 1);
    let fin = fin[0];
    assert_eq!(fin["checkpoint"], "best.safetensors");
    assert_eq!(fin["best_step"], best["step"]);
    assert_eq!(fin["valid_loss"].as_f64().unwrap(), loss(best));
    assert_ne!(fin["valid_loss"].as_f64().unwrap(), loss(valid[2]));
    let (v_ppl, t_ppl) = (
        fin["valid_ppl"].as_f64().unwrap(),
        fin["test_ppl"].as_f64().unwrap(),
    );
    assert!(
        stdout.contains(&format!("valid ppl {v_ppl:.2}, test ppl {t_ppl:.2}")),
        "{stdout}"
    );
    // Without a terminal, progress lines.
    assert!(stdout.contains("step 12/12: loss"), "{stdout}");
    assert!(run.join("training.png").is_file());

    // `deq eval` of the best checkpoint prints the same figures, saying what it scored.
    let best_ck = run.join("best.safetensors");
    let eval = ok(
        &dir,
        &["eval", "--checkpoint", s(&best_ck), "--data", s(&data)],
    );
    assert!(
        eval.contains(&format!(
            "valid: loss {:.4}, perplexity {v_ppl:.2}",
            loss(best)
        )),
        "{eval}"
    );
    assert!(eval.contains(&format!("perplexity {t_ppl:.2}")), "{eval}");
    assert!(eval.contains("166 of 168 tokens scored"), "{eval}");
    // … and another evaluation protocol on request.
    let other = ok(
        &dir,
        &[
            "eval",
            "--checkpoint",
            s(&best_ck),
            "--data",
            s(&data),
            "--batch",
            "1",
            "--seq-len",
            "5",
            "--mem-len",
            "0",
        ],
    );
    assert!(other.contains("167 of 168 tokens scored"), "{other}");
    assert!(other.contains("segments of 5, memory 0"), "{other}");

    // `deq generate` continues a prompt with words of the vocabulary.
    let text = ok(
        &dir,
        &[
            "generate",
            "--checkpoint",
            s(&best_ck),
            "--data",
            s(&data),
            "--prompt",
            "x",
            "--tokens",
            "6",
        ],
    );
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"x"), "{text}");
    assert!(words.len() > 1, "{text}");
    assert!(words.iter().all(|w| ["x", "y", "z"].contains(w)), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_fresh_run_beside_an_old_runs_latest_never_reads_or_changes_it() {
    let dir = scratch("beside");
    let (data, cfg) = (write_data(&dir), write_config(&dir));
    let train = ["train", "--config", s(&cfg), "--data", s(&data)];
    ok(&dir, &[&train[..], &["--name", "old"]].concat());
    let latest = dir.join("runs/latest");
    assert_eq!(std::fs::read_link(&latest).unwrap(), Path::new("old"));
    let old = snapshot(&dir.join("runs/old"));
    assert!(old.keys().any(|p| p.ends_with("last.safetensors")));

    // A fresh run that diverges before its first save stops with an error instead of
    // reloading the old run's last.safetensors, in a directory of its own.
    let out = deq(&dir, &[&train[..], &["--lr", "1e30"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no checkpoint of its own"), "{stderr}");
    assert_eq!(snapshot(&dir.join("runs/old")), old, "the old run changed");
    let new = std::fs::read_link(&latest).unwrap();
    assert_ne!(new, Path::new("old"));
    let new_run = dir.join("runs").join(&new);
    assert!(new_run.join("metrics.jsonl").is_file());
    assert!(!new_run.join("last.safetensors").exists());

    // A run of an older deq wrote into runs/latest itself: it is moved aside, untouched.
    std::fs::remove_file(&latest).unwrap();
    std::fs::create_dir(&latest).unwrap();
    for f in ["last.safetensors", "metrics.jsonl"] {
        std::fs::copy(dir.join("runs/old").join(f), latest.join(f)).unwrap();
    }
    let legacy = snapshot(&latest);
    ok(&dir, &train);
    let moved: Vec<PathBuf> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("latest-before-")
        })
        .collect();
    assert_eq!(moved.len(), 1);
    let relocated: BTreeMap<PathBuf, Vec<u8>> = snapshot(&moved[0])
        .into_iter()
        .map(|(p, b)| (latest.join(p.file_name().unwrap()), b))
        .collect();
    assert_eq!(relocated, legacy, "the older run's files changed");
    let newest = dir.join("runs").join(std::fs::read_link(&latest).unwrap());
    assert!(of_kind(&records(&newest), "final").len() == 1);
    assert_eq!(snapshot(&dir.join("runs/old")), old, "the old run changed");
    // Resuming through runs/latest continues the run it points at, which stays the newest.
    let target = std::fs::read_link(&latest).unwrap();
    ok(
        &dir,
        &[
            "train",
            "--resume",
            "runs/latest/last.safetensors",
            "--steps",
            "13",
        ],
    );
    assert_eq!(std::fs::read_link(&latest).unwrap(), target);
    assert_eq!(of_kind(&records(&newest), "resume")[0]["step"], 12);
    // A fresh run never writes into a directory that holds a run.
    let out = deq(&dir, &[&train[..], &["--name", "old"]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a run"));
    assert_eq!(snapshot(&dir.join("runs/old")), old, "the old run changed");
    let _ = std::fs::remove_dir_all(&dir);
}

fn losses(recs: &[Value]) -> Vec<(u64, f64)> {
    of_kind(recs, "train")
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_resume_at_the_same_steps_gives_the_losses_of_an_uninterrupted_run() {
    let dir = scratch("resume");
    let (data, cfg) = (write_data(&dir), write_config(&dir));
    let train = ["train", "--config", s(&cfg), "--data", s(&data)];
    let (straight, parts) = (dir.join("straight"), dir.join("parts"));
    ok(&dir, &[&train[..], &["--out", s(&straight)]].concat());
    let stopped = ok(
        &dir,
        &[&train[..], &["--out", s(&parts), "--stop-after", "6"]].concat(),
    );
    assert!(stopped.contains("stopped after step 6"), "{stopped}");
    assert!(of_kind(&records(&parts), "final").is_empty());
    // The data and the configuration come from the checkpoint; the output from its directory.
    let last = parts.join("last.safetensors");
    ok(&dir, &["train", "--resume", s(&last)]);

    let expected = losses(&records(&straight));
    assert_eq!(expected.len(), 12);
    let recs = records(&parts);
    assert_eq!(losses(&recs), expected, "resumed losses differ");
    let fin = |r: &[Value]| of_kind(r, "final")[0].clone();
    let (a, b) = (fin(&records(&straight)), fin(&recs));
    assert_eq!(
        (&a["valid_loss"], &a["test_loss"], &a["best_step"]),
        (&b["valid_loss"], &b["test_loss"], &b["best_step"])
    );
    let start = of_kind(&recs, "start");
    let resume = of_kind(&recs, "resume");
    assert_eq!((start.len(), resume.len()), (1, 1));
    for r in [start[0], resume[0]] {
        assert!(r["config"]["model"].is_object(), "{r}");
        assert!(!r["git"].as_str().unwrap().is_empty(), "{r}");
        assert!(r["command"].as_array().unwrap().len() > 2, "{r}");
    }
    assert_eq!(resume[0]["step"], 6);
    assert_eq!(resume[0]["superseded"], 0);

    // Resuming from an earlier checkpoint of the run (its best, step 4) redoes steps 5-12:
    // the resume record says which records it supersedes, and the redone steps are identical.
    let best = parts.join("best.safetensors");
    ok(&dir, &["train", "--resume", s(&best)]);
    let recs = records(&parts);
    let resume = of_kind(&recs, "resume");
    assert_eq!(resume.len(), 2);
    assert_eq!(
        (&resume[1]["step"], &resume[1]["superseded"]),
        (&4.into(), &8.into())
    );
    let after: Vec<(u64, f64)> = losses(&recs).into_iter().skip(12).collect();
    assert_eq!(after, expected[4..], "redone steps differ");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_with_steps_extends_the_run_by_the_documented_rule() {
    let dir = scratch("extend");
    let (data, cfg) = (write_data(&dir), write_config(&dir));
    let run = dir.join("run");
    ok(
        &dir,
        &[
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&data),
            "--out",
            s(&run),
            "--steps",
            "8",
        ],
    );
    let last = run.join("last.safetensors");
    let out = deq(&dir, &["train", "--resume", s(&last)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--steps"));
    ok(&dir, &["train", "--resume", s(&last), "--steps", "12"]);
    let recs = records(&run);
    let resume = of_kind(&recs, "resume")[0];
    let cfg: TrainConfig = serde_json::from_value(resume["config"].clone()).unwrap();
    assert_eq!((cfg.steps, cfg.schedule.total), (12, 12));
    // Only the end of the schedule moves: warm-up, rates and the evaluation interval stay.
    let first = of_kind(&recs, "start")[0];
    let before: TrainConfig = serde_json::from_value(first["config"].clone()).unwrap();
    let rule = LrSchedule {
        total: 12,
        ..before.schedule.clone()
    };
    assert_eq!(cfg.schedule, rule);
    assert_eq!(cfg.eval_every, before.eval_every);
    let lrs: Vec<(u64, f64)> = of_kind(&recs, "train")
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r["lr"].as_f64().unwrap()))
        .collect();
    assert_eq!(lrs.len(), 12);
    for &(step, lr) in &lrs[8..] {
        assert_eq!(lr, rule.at(step as usize - 1), "step {step}");
        assert_ne!(lr, before.schedule.at(step as usize - 1), "step {step}");
    }
    assert_eq!(of_kind(&recs, "final").len(), 2);
    let out = deq(&dir, &["train", "--resume", s(&last), "--steps", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already done 12 steps"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_flag_that_would_change_a_resumed_run_exits_2_naming_it() {
    let dir = scratch("refuse");
    let (data, cfg) = (write_data(&dir), write_config(&dir));
    let run = dir.join("run");
    ok(
        &dir,
        &[
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&data),
            "--out",
            s(&run),
            "--stop-after",
            "2",
        ],
    );
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["train", "valid", "test"] {
        std::fs::copy(
            data.join(format!("{f}.txt")),
            other.join(format!("{f}.txt")),
        )
        .unwrap();
    }
    let before = snapshot(&dir);
    let last = run.join("last.safetensors");
    let cases: [(&[&str], &str); 12] = [
        (&["--lr", "0.1"], "--lr"),
        (&["--batch", "2"], "--batch"),
        (&["--seq-len", "4"], "--seq-len"),
        (&["--preset", "ptb-small"], "--preset"),
        (&["--model", "trellisnet"], "--model"),
        (&["--config", s(&cfg)], "--config"),
        (&["--seed", "7"], "--seed"),
        (&["--jac-weight", "2"], "--jac-weight"),
        (&["--eval-batch", "1"], "--eval-batch"),
        (&["--eval-mem-len", "3"], "--eval-mem-len"),
        (&["--level", "char"], "--level"),
        (&["--data", s(&other)], "--data"),
    ];
    for (flag, name) in cases {
        let out = deq(&dir, &[&["train", "--resume", s(&last)], flag].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains("cannot change on resume"),
            "{flag:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(snapshot(&dir), before, "{flag:?} changed files");
    }
    // Repeating the run's own data is allowed.
    ok(
        &dir,
        &[
            "train",
            "--resume",
            s(&last),
            "--data",
            s(&data),
            "--stop-after",
            "3",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn print_config_writes_the_json_that_config_accepts_and_nothing_else() {
    let dir = scratch("print");
    let printed = ok(
        &dir,
        &[
            "train",
            "--print-config",
            "--preset",
            "tiny",
            "--steps",
            "30",
            "--lr",
            "0.01",
        ],
    );
    let cfg: TrainConfig = serde_json::from_str(&printed).unwrap();
    let mut expected = TrainConfig::preset("tiny").unwrap();
    expected.model.vocab = 10_000;
    expected.set_steps(30);
    expected.set_lr(0.01);
    assert_eq!(cfg, expected);
    let path = dir.join("printed.json");
    std::fs::write(&path, &printed).unwrap();
    let again = ok(&dir, &["train", "--print-config", "--config", s(&path)]);
    assert_eq!(again, printed);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "--print-config wrote files"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_time_budget_plans_the_steps_from_a_probe_logs_each_plan_and_ends_with_the_final_figures() {
    let dir = scratch("budget");
    let (data, config) = (write_data(&dir), write_config(&dir));
    let run = dir.join("run");
    let args = ["train", "--config", s(&config), "--data", s(&data)];
    let out = ok(
        &dir,
        &[&args[..], &["--minutes", "0.05", "--out", s(&run)]].concat(),
    );
    assert!(out.contains("best checkpoint"), "{out}");
    let recs = records(&run);
    let plans = of_kind(&recs, "plan");
    assert_eq!(
        plans[0]["measured"], "probe",
        "the first plan comes from the probe"
    );
    let start = of_kind(&recs, "start")[0];
    assert_eq!(start["config"]["steps"], plans[0]["steps"]);
    // The run ends at the last plan's step count, with its final evaluation.
    let last_step = of_kind(&recs, "train").last().unwrap()["step"].clone();
    assert_eq!(&last_step, &plans.last().unwrap()["steps"]);
    assert_eq!(of_kind(&recs, "final").len(), 1);
    for p in &plans {
        for key in ["deq_step", "pretrain_step", "valid", "test"] {
            assert!(p["costs"][key].as_f64().unwrap() > 0.0, "{p}");
        }
    }
    // A budget cannot be set on resume, nor be empty.
    let resume = deq(
        &dir,
        &[
            "train",
            "--resume",
            s(&run.join("last.safetensors")),
            "--minutes",
            "1",
        ],
    );
    assert_eq!(resume.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&resume.stderr).contains("--minutes cannot change"));
    let empty = deq(&dir, &[&args[..], &["--minutes", "0"]].concat());
    assert_eq!(empty.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("--minutes must be > 0"));

    // `deq plot` redraws training.png from metrics.jsonl alone.
    let png = dir.join("redrawn.png");
    let drawn = ok(&dir, &["plot", s(&run), "--out", s(&png)]);
    assert!(
        drawn.contains(&format!("drew {last_step} steps")),
        "{drawn}"
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let missing = deq(&dir, &["plot", s(&data)]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("metrics.jsonl"));
    let _ = std::fs::remove_dir_all(&dir);
}
