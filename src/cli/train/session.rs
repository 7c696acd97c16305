//! A training session: the loop, with each concern in its own method (a step, the recovery
//! from a non-finite streak, the periodic evaluation on the whole validation split, saving,
//! stopping early, and the final evaluation of the best checkpoint).

use super::budget::Budget;
use super::history::History;
use super::recovery::{Recovery, MAX_SKIPS};
use super::run_dir::{self, RunDir};
use super::setup::Plan;
use super::TrainArgs;
use crate::cli::progress::{read_records, MetricsLog, Progress};
use deq_autograd::Device;
use deq_models::checkpoint::{load_checkpoint, save_checkpoint};
use deq_models::data::{batchify, Batched, Corpus};
use deq_models::error::{DeqError, Result};
use deq_models::score::{EvalSplit, Score};
use deq_models::train::{StepMetrics, Trainer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

/// The flags that steer a session without changing the run.
pub struct Options {
    out: Option<PathBuf>,
    name: Option<String>,
    device: Device,
    save_every: Option<Duration>,
    stop_after: Option<usize>,
    progress_every: Duration,
}

impl Options {
    /// Reads and checks them.
    pub fn from_args(a: &TrainArgs) -> Result<Options> {
        let duration = |flag: &str, v: f64, unit: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(Duration::from_secs_f64(v * unit))
            } else {
                Err(DeqError::config(format!("{flag} must be ≥ 0, got {v}")))
            }
        };
        let save_every = duration("--save-every", a.save_every, 60.0)?;
        Ok(Options {
            out: a.out.clone(),
            name: a.name.clone(),
            device: a.machine.device,
            save_every: (!save_every.is_zero()).then_some(save_every),
            stop_after: a.stop_after,
            progress_every: duration("--progress-every", a.progress_every, 1.0)?,
        })
    }
}

/// A run in progress.
pub struct Session {
    trainer: Trainer,
    corpus: Corpus,
    data_meta: [(String, String); 2],
    train: Batched,
    valid: EvalSplit,
    test: EvalSplit,
    dir: RunDir,
    log: MetricsLog,
    progress: Progress,
    history: History,
    recovery: Recovery,
    options: Options,
    start: Instant,
    last_save: Instant,
    skipped_total: usize,
    trace_every: usize,
    budget: Option<Budget>,
}

impl Session {
    /// Opens the run's directory (fresh, or the resumed run's), writes the start or resume
    /// record, moves the trainer to the device and cuts the data.
    pub fn start(plan: Plan, options: Options) -> Result<Session> {
        let Plan {
            mut trainer,
            corpus,
            source,
            data_meta,
            resumed,
        } = plan;
        if let Some(stop) = options.stop_after {
            if stop <= trainer.step {
                return Err(DeqError::config(format!(
                    "--stop-after {stop}: the run is already at step {}",
                    trainer.step
                )));
            }
        }
        let from = resumed.as_ref().map(|r| r.0.as_path());
        let path = run_dir::choose(options.out.as_deref(), options.name.as_deref(), from)?;
        let dir = run_dir::create(&path, from)?;
        if let Some(note) = run_dir::point_latest(&dir)? {
            println!("{note}");
        }
        let cfg = trainer.cfg.clone();
        let trace_every = (cfg.steps / 5).max(1);
        let (history, superseded) = match &resumed {
            Some((from, step)) => {
                bring_best_along(from, &dir)?;
                History::from_records(&read_records(&dir.metrics())?, *step, trace_every)
            }
            None => (History::default(), 0),
        };
        let mut log = MetricsLog::open(&dir.metrics())?;
        let mut record = json!({
            "kind": if resumed.is_some() { "resume" } else { "start" },
            "step": trainer.step,
            "config": cfg,
            "git": env!("DEQ_GIT_REVISION"),
            "command": std::env::args().collect::<Vec<_>>(),
            "data": data_meta[0].1,
            "level": data_meta[1].1,
            "device": options.device.to_string(),
            "threads": rayon::current_num_threads(),
            "time": run_dir::timestamp(SystemTime::now()),
        });
        if let Some((from, _)) = &resumed {
            record["from"] = json!(from.display().to_string());
            record["superseded"] = json!(superseded);
        }
        log.write(&record);
        trainer.to_device(options.device)?;
        println!(
            "deq train: {} params, vocab {}, data {source}, {} steps of {}×{} tokens, {} threads, \
             on {}; run directory {}",
            trainer.model.store.numel(),
            corpus.vocab.len(),
            cfg.steps,
            cfg.batch,
            cfg.seq_len,
            rayon::current_num_threads(),
            options.device.describe(),
            dir.path.display()
        );
        if let Some((from, step)) = &resumed {
            let note = if superseded > 0 {
                format!(
                    "; the {superseded} step records after step {step} in metrics.jsonl are \
                     superseded (see its resume record)"
                )
            } else {
                String::new()
            };
            println!("resumed from {} at step {step}{note}", from.display());
        }
        let train = batchify(&corpus.train, cfg.batch)?;
        let valid = EvalSplit::new(&corpus.valid, &cfg.eval)?;
        let test = EvalSplit::new(&corpus.test, &cfg.eval)?;
        let progress = Progress::new(cfg.steps, trainer.step, options.progress_every);
        Ok(Session {
            recovery: Recovery::new(resumed),
            trainer,
            corpus,
            data_meta,
            train,
            valid,
            test,
            dir,
            log,
            progress,
            history,
            options,
            start: Instant::now(),
            last_save: Instant::now(),
            skipped_total: 0,
            trace_every,
            budget: None,
        })
    }

    /// Runs under a `--minutes` budget (its first plan is logged).
    pub fn with_budget(mut self, budget: Budget) -> Session {
        self.log.write(&budget.first_record(&self.trainer.cfg));
        self.budget = Some(budget);
        self
    }

    /// Trains to the last step (or `--stop-after`), then evaluates the best checkpoint.
    pub fn run(mut self) -> Result<ExitCode> {
        while self.trainer.step < self.trainer.cfg.steps {
            self.step()?;
            if self.options.stop_after == Some(self.trainer.step)
                && self.trainer.step < self.trainer.cfg.steps
            {
                return self.stop();
            }
        }
        self.progress.finish();
        self.final_evaluation()
    }

    /// One training step, its records, and what follows it: a recovery after a streak, an
    /// evaluation when one is due, else a timed save.
    fn step(&mut self) -> Result<()> {
        let pretraining = self.trainer.step < self.trainer.cfg.pretrain_steps;
        let m = self.trainer.train_step(&self.train);
        if let Some(b) = &mut self.budget {
            b.observe(m.seconds, pretraining);
        }
        self.recovery.observe(&m);
        self.skipped_total += m.skipped as usize;
        self.log.write(&train_record(&m));
        self.progress.update(&m, self.skipped_total);
        self.history.step(&m, self.trace_every);
        if self.trainer.skips >= MAX_SKIPS {
            self.recover()?;
        }
        let (step, cfg) = (self.trainer.step, &self.trainer.cfg);
        if (cfg.eval_every > 0 && step % cfg.eval_every == 0) || step == cfg.steps {
            self.evaluate()
        } else if self.save_due() {
            self.save_last()
        } else {
            Ok(())
        }
    }

    /// Reloads the newest checkpoint saved at least one good step before the streak (see
    /// [`super::recovery`]) with half the learning rate, keeping the step count; without one,
    /// stops the run with an error that says so.
    fn recover(&mut self) -> Result<()> {
        let step = self.trainer.step;
        let streak = self.recovery.streak_start().unwrap_or(step);
        for cand in self.recovery.candidates(streak) {
            let Ok(ck) = load_checkpoint(&cand.path) else {
                continue;
            };
            let Ok(mut restored) = Trainer::from_checkpoint(&ck, &cand.path, &self.corpus.vocab)
            else {
                continue;
            };
            if restored.step != cand.step {
                continue; // overwritten since (e.g. a better best.safetensors)
            }
            restored.to_device(self.options.device)?;
            restored.cfg = self.trainer.cfg.clone();
            restored.step = step;
            restored.skips = 0;
            restored.lr_scale = self.trainer.lr_scale * 0.5;
            restored.best_valid = restored.best_valid.min(self.trainer.best_valid);
            self.trainer = restored;
            self.recovery.reset_streak();
            self.progress.println(&format!(
                "step {step}: {MAX_SKIPS} non-finite steps in a row since step {streak}; reloaded \
                 {} (step {}), learning rate ×{}",
                cand.path.display(),
                cand.step,
                self.trainer.lr_scale
            ));
            self.log.write(
                &json!({"kind": "recover", "step": step, "streak_start": streak,
                "from": cand.path.display().to_string(), "from_step": cand.step,
                "lr_scale": self.trainer.lr_scale}),
            );
            return Ok(());
        }
        let known: Vec<String> = self
            .recovery
            .known()
            .iter()
            .map(|s| format!("{} (step {})", s.path.display(), s.step))
            .collect();
        let message = format!(
            "step {step}: {MAX_SKIPS} non-finite steps in a row since step {streak}, and this run \
             has no checkpoint of its own saved at least one good step before the streak to \
             reload ({}); lower the learning rate (--lr)",
            if known.is_empty() {
                "it has saved none yet".to_string()
            } else {
                format!("it has only {}", known.join(", "))
            }
        );
        self.progress.finish();
        self.log
            .write(&json!({"kind": "stopped", "step": step, "reason": message}));
        Err(DeqError::training(message))
    }

    /// Scores the whole validation split, redraws the plot, and (outside a streak) saves
    /// `best` when the loss is the lowest yet, and `last`.
    fn evaluate(&mut self) -> Result<()> {
        let step = self.trainer.step;
        let started = Instant::now();
        let score = self.valid.score(&self.trainer.model, &self.trainer.cfg);
        self.replan(step, started.elapsed().as_secs_f64());
        self.progress.println(&format!(
            "step {step:>6}: valid loss {:.3}, ppl {:.1} ({} tokens scored; {})",
            score.loss,
            score.perplexity(),
            score.scored,
            score.solve.describe()
        ));
        self.log
            .write(&json!({"kind": "valid", "step": step, "loss": score.loss,
            "ppl": score.perplexity(), "scored": score.scored, "tokens": score.tokens,
            "fwd_resid_mean": score.solve.mean_rel, "fwd_resid_max": score.solve.max_rel,
            "fwd_iters_mean": score.solve.mean_iterations}));
        self.history.valid(step, score.loss, score.solve.mean_rel);
        self.history.plot(&self.dir.plot())?;
        if let Some(since) = self.recovery.streak_start() {
            self.progress.println(&format!(
                "step {step:>6}: not saved (non-finite steps since step {since})"
            ));
            return Ok(());
        }
        if score.loss.is_finite() && score.loss < self.trainer.best_valid {
            self.trainer.best_valid = score.loss;
            let best = self.dir.best();
            self.save(&best)?;
        }
        self.save_last()
    }

    /// Under a budget, re-sizes the run after an evaluation (see [`super::budget`]).
    fn replan(&mut self, step: usize, valid_seconds: f64) {
        let Some(budget) = &self.budget else {
            return;
        };
        if step >= self.trainer.cfg.steps {
            return;
        }
        if let Some((steps, record)) = budget.replan(&self.trainer.cfg, step, valid_seconds) {
            self.progress.println(&format!(
                "step {step:>6}: re-planned to {steps} steps (was {}) to end within the budget",
                self.trainer.cfg.steps
            ));
            self.trainer.cfg.extend_to(steps);
            self.progress.set_total(steps);
            self.log.write(&record);
        }
    }

    fn save_due(&self) -> bool {
        self.options
            .save_every
            .is_some_and(|every| self.last_save.elapsed() >= every)
            && self.recovery.streak_start().is_none()
    }

    /// Saves `last.safetensors`, keeping the one it replaces as `previous.safetensors`.
    fn save_last(&mut self) -> Result<()> {
        let (last, previous) = (self.dir.last(), self.dir.previous());
        if last.is_file() {
            self.recovery.rotated(&last, &previous);
            std::fs::rename(&last, &previous).map_err(|e| DeqError::io(&previous, e))?;
        }
        self.save(&last)?;
        self.recovery.saved(&last, self.trainer.step);
        self.last_save = Instant::now();
        Ok(())
    }

    /// Writes the trainer to `path` (with the data source), refusing non-finite values.
    fn save(&mut self, path: &Path) -> Result<()> {
        let mut ck = self.trainer.to_checkpoint(&self.corpus.vocab);
        ck.metadata.extend(self.data_meta.iter().cloned());
        if let Some(name) = ck.first_non_finite() {
            return Err(DeqError::checkpoint(
                path,
                format!("refusing to save non-finite tensor {name:?}"),
            ));
        }
        save_checkpoint(path, &ck)?;
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        self.log
            .write(&json!({"kind": "save", "step": self.trainer.step, "file": file}));
        Ok(())
    }

    /// `--stop-after`: saves `last` (outside a streak) and exits as an interruption would.
    fn stop(mut self) -> Result<ExitCode> {
        self.progress.finish();
        let step = self.trainer.step;
        if self.recovery.streak_start().is_none() {
            self.save_last()?;
        } else {
            println!("not saved: inside a streak of non-finite steps");
        }
        self.history.plot(&self.dir.plot())?;
        self.log
            .write(&json!({"kind": "stopped", "step": step, "reason": "--stop-after"}));
        println!(
            "stopped after step {step} (--stop-after); continue with: deq train --resume {}",
            self.dir.last().display()
        );
        Ok(ExitCode::SUCCESS)
    }

    /// The final figures: the best checkpoint (lowest loss on the whole validation split)
    /// scored on the validation and test splits.
    fn final_evaluation(mut self) -> Result<ExitCode> {
        let train_seconds = self.start.elapsed().as_secs_f64();
        let tokens_per_second = self.progress.tokens_per_second();
        self.history.plot(&self.dir.plot())?;
        let best = self.dir.best();
        let summary = format!(
            "trained {} steps in {train_seconds:.0} s ({tokens_per_second:.0} tokens/s)",
            self.trainer.step
        );
        if !best.is_file() {
            println!(
                "{summary}; no evaluation gave a finite validation loss, so there is no best \
                 checkpoint and no final perplexity"
            );
            self.log.write(&json!({"kind": "final", "checkpoint": null,
                "train_seconds": train_seconds, "tokens_per_second": tokens_per_second}));
            return Ok(ExitCode::SUCCESS);
        }
        let ck = load_checkpoint(&best)?;
        let mut t = Trainer::from_checkpoint(&ck, &best, &self.corpus.vocab)?;
        t.to_device(self.options.device)?;
        let v = self.valid.score(&t.model, &t.cfg);
        let s = self.test.score(&t.model, &t.cfg);
        self.log
            .write(&json!({"kind": "final", "checkpoint": "best.safetensors",
            "best_step": t.step, "valid_loss": v.loss, "test_loss": s.loss,
            "valid_ppl": v.perplexity(), "test_ppl": s.perplexity(),
            "valid_scored": v.scored, "test_scored": s.scored,
            "valid_fwd_resid_mean": v.solve.mean_rel, "test_fwd_resid_mean": s.solve.mean_rel,
            "valid_fwd_resid_max": v.solve.max_rel, "test_fwd_resid_max": s.solve.max_rel,
            "train_seconds": train_seconds, "tokens_per_second": tokens_per_second}));
        println!(
            "{summary}; best checkpoint (step {}): valid ppl {:.2}, test ppl {:.2}",
            t.step,
            v.perplexity(),
            s.perplexity()
        );
        print_scored("valid", &v);
        print_scored("test", &s);
        println!(
            "checkpoints, metrics and training.png in {}",
            self.dir.path.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

fn print_scored(name: &str, s: &Score) {
    println!("  {name}: {}; {}", s.solve.describe(), s.describe());
}

fn train_record(m: &StepMetrics) -> Value {
    json!({"kind": "train", "step": m.step, "loss": m.loss, "lr": m.lr,
    "grad_norm": m.grad_norm, "fwd_iters": m.fwd_iters, "fwd_resid": m.fwd_resid,
    "bwd_iters": m.bwd_iters, "bwd_resid": m.bwd_resid, "skipped": m.skipped,
    "tokens": m.tokens, "seconds": m.seconds, "fwd_trace": m.fwd_trace, "jac_loss": m.jac_loss})
}

/// A run resumed into another directory brings its best checkpoint along, so that its final
/// evaluation (of the best checkpoint) reads only its own directory.
fn bring_best_along(from: &Path, dir: &RunDir) -> Result<()> {
    let src_dir = match from.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let src = src_dir.join("best.safetensors");
    let dst = dir.best();
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if !src.is_file() || dst.exists() || same(src_dir, &dir.path) {
        return Ok(());
    }
    let ck = load_checkpoint(&src)?;
    save_checkpoint(&dst, &ck)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deq_autograd::Tensor;
    use deq_models::config::EvalConfig;
    use deq_models::data::Level;
    use deq_models::train::TrainConfig;
    use deq_models::CellConfig;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("deq-session-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A 40-step run of a small DEQ-Transformer writing into `dir`, evaluating only at the end.
    fn session(dir: &Path) -> Session {
        let text = "the cat sat on the mat\na dog ran to the tree\n".repeat(30);
        let corpus = Corpus::from_texts(&text, &text, &text, Level::Word).unwrap();
        let mut cfg = TrainConfig::preset("tiny").unwrap();
        cfg.model.vocab = corpus.vocab.len();
        cfg.model.d_embed = 16;
        if let CellConfig::Transformer(c) = &mut cfg.model.cell {
            (c.d_model, c.d_inner, c.mem_len) = (16, 32, 4);
        }
        (cfg.batch, cfg.seq_len) = (3, 6);
        cfg.set_steps(40);
        cfg.eval_every = 0;
        cfg.eval = EvalConfig::like_training(&cfg.model, 3, 6);
        cfg.validate().unwrap();
        let plan = Plan {
            trainer: Trainer::new(cfg),
            corpus,
            source: "test".into(),
            data_meta: [
                ("deq.data".into(), "test".into()),
                ("deq.level".into(), "word".into()),
            ],
            resumed: None,
        };
        let options = Options {
            out: Some(dir.to_path_buf()),
            name: None,
            device: Device::Cpu,
            save_every: None,
            stop_after: None,
            progress_every: Duration::from_secs(3600),
        };
        Session::start(plan, options).unwrap()
    }

    /// Every weight NaN: each following step is non-finite and skipped.
    fn poison(t: &mut Trainer) {
        for v in t.model.store.values_mut() {
            *v = Tensor::from_vec(vec![f32::NAN; v.numel()], v.shape());
        }
    }

    fn bits(t: &Trainer) -> Vec<Vec<u32>> {
        let store = &t.model.store;
        let values = store.values().iter();
        values
            .map(|v| v.data().iter().map(|x| x.to_bits()).collect())
            .collect()
    }

    fn step_of(path: &Path) -> usize {
        let ck = load_checkpoint(path).unwrap();
        ck.metadata["deq.step"].parse().unwrap()
    }

    #[test]
    fn recovery_reloads_weights_saved_a_good_step_before_the_streak_and_never_saves_inside_it() {
        let dir = scratch("recover");
        let mut s = session(&dir);
        for _ in 0..3 {
            s.step().unwrap();
        }
        s.save_last().unwrap();
        let at_3 = bits(&s.trainer);
        for _ in 0..2 {
            s.step().unwrap();
        }
        // Step 5's weights are the ones the streak starts from: reloading them would replay it.
        s.save_last().unwrap();
        poison(&mut s.trainer);
        s.step().unwrap();
        assert_eq!(s.recovery.streak_start(), Some(6));
        s.evaluate().unwrap();
        assert_eq!(
            step_of(&s.dir.last()),
            5,
            "an evaluation inside a streak saved"
        );
        assert!(!s.dir.best().exists(), "a non-finite loss became the best");
        for _ in 0..4 {
            s.step().unwrap();
        }
        assert_eq!(s.trainer.step, 10);
        assert!(bits(&s.trainer) == at_3, "the step-3 weights are not back");
        assert_eq!(s.trainer.lr_scale, 0.5);
        assert_eq!(s.recovery.streak_start(), None);
        let records = read_records(&s.dir.metrics()).unwrap();
        let recover: Vec<&Value> = records.iter().filter(|r| r["kind"] == "recover").collect();
        assert_eq!(recover.len(), 1);
        assert_eq!(recover[0]["from_step"], 3);
        assert_eq!(recover[0]["streak_start"], 6);
        // The run goes on with finite steps from the reloaded weights.
        s.step().unwrap();
        assert_eq!(s.trainer.skips, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_streak_with_no_checkpoint_of_its_own_stops_the_run_saying_so() {
        let dir = scratch("nothing");
        let mut s = session(&dir);
        s.step().unwrap();
        poison(&mut s.trainer);
        for _ in 0..4 {
            s.step().unwrap();
        }
        let err = s.step().expect_err("the fifth skip has nothing to reload");
        assert!(
            err.to_string().contains("no checkpoint of its own"),
            "{err}"
        );
        assert!(!s.dir.last().exists() && !s.dir.previous().exists());
        let records = read_records(&s.dir.metrics()).unwrap();
        assert_eq!(records.last().unwrap()["kind"], "stopped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
