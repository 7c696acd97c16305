//! `deq train`.

use super::plot::{write_png, Panel, Series};
use super::progress::{MetricsLog, Progress};
use super::{data_source, existing_file, LevelArg, ModelArg};
use clap::Args;
use deq_autograd::Device;
use deq_models::checkpoint::{load_checkpoint, save_checkpoint};
use deq_models::data::{batchify, Corpus};
use deq_models::error::{DeqError, Result};
use deq_models::train::{TrainConfig, Trainer};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Consecutive skipped steps (non-finite loss or gradient) after which the last good weights
/// are reloaded and the learning rate halved.
const MAX_SKIPS: usize = 5;

/// Options of `deq train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Preset: tiny (default, minutes on 2 cores), ptb-small (the real PTB run), trellis-tiny,
    /// ptb-trellis.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Cell; `trellisnet` switches a transformer preset to its TrellisNet twin.
    #[arg(long, value_enum)]
    model: Option<ModelArg>,
    /// Directory with train/valid/test text files (default: the bundled PTB).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokenisation level.
    #[arg(long, value_enum, default_value = "word")]
    level: LevelArg,
    /// Training steps (overrides the preset).
    #[arg(long)]
    steps: Option<usize>,
    /// Streams per batch (overrides the preset).
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per segment (overrides the preset).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Peak learning rate (overrides the preset).
    #[arg(long)]
    lr: Option<f64>,
    /// A JSON training configuration (unknown keys are rejected); replaces the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Random seed (overrides the preset).
    #[arg(long)]
    seed: Option<u64>,
    /// Output directory for checkpoints and metrics.
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
    /// Continue from a checkpoint (`last.safetensors` of an earlier run).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
}

fn configure(a: &TrainArgs, corpus: &Corpus) -> Result<TrainConfig> {
    let mut cfg = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| DeqError::io(path, e))?;
            serde_json::from_str::<TrainConfig>(&text)
                .map_err(|e| DeqError::config(format!("{}: {e}", path.display())))?
        }
        None => {
            let name = match (a.model, a.preset.as_str()) {
                (Some(ModelArg::Trellisnet), "tiny") => "trellis-tiny",
                (Some(ModelArg::Trellisnet), "ptb-small") => "ptb-trellis",
                (Some(ModelArg::Transformer), "trellis-tiny") => "tiny",
                (Some(ModelArg::Transformer), "ptb-trellis") => "ptb-small",
                (_, p) => p,
            };
            TrainConfig::preset(name).map_err(DeqError::config)?
        }
    };
    if let Some(s) = a.steps {
        cfg.steps = s;
        cfg.schedule.total = s;
        cfg.schedule.warmup = (s / 20).max(1);
        cfg.pretrain_steps = cfg.pretrain_steps.min(s / 5);
        cfg.eval_every = s / 4;
    }
    if let Some(b) = a.batch {
        cfg.batch = b;
    }
    if let Some(t) = a.seq_len {
        cfg.seq_len = t;
    }
    if let Some(lr) = a.lr {
        cfg.schedule.lr = lr;
        cfg.schedule.min_lr = lr / 20.0;
    }
    if let Some(seed) = a.seed {
        cfg.seed = seed;
    }
    cfg.model.vocab = corpus.vocab.len();
    cfg.validate().map_err(DeqError::config)?;
    Ok(cfg)
}

fn save(trainer: &Trainer, corpus: &Corpus, path: &Path) -> Result<()> {
    let ck = trainer.to_checkpoint(&corpus.vocab);
    if let Some(name) = ck.first_non_finite() {
        return Err(DeqError::checkpoint(
            path,
            format!("refusing to save non-finite tensor {name:?}"),
        ));
    }
    save_checkpoint(path, &ck)
}

/// Runs `deq train`.
pub fn run(a: TrainArgs) -> Result<ExitCode> {
    // Check the device first: a missing GPU fails at once, before any data is read.
    a.device.open()?;
    let (corpus, source) = data_source::load(a.data.as_ref(), data_source::level(a.level))?;
    let mut trainer = match &a.resume {
        Some(path) => {
            existing_file(path, "checkpoint")?;
            let ck = load_checkpoint(path)?;
            Trainer::from_checkpoint(&ck, path, &corpus.vocab)?
        }
        None => Trainer::new(configure(&a, &corpus)?),
    };
    trainer.to_device(a.device)?;
    let cfg = trainer.cfg.clone();
    let train = batchify(&corpus.train, cfg.batch)?;
    let valid = batchify(&corpus.valid, cfg.batch)?;
    let test = batchify(&corpus.test, cfg.batch)?;
    std::fs::create_dir_all(&a.out).map_err(|e| DeqError::io(&a.out, e))?;
    let last = a.out.join("last.safetensors");
    let best = a.out.join("best.safetensors");
    let mut log = MetricsLog::open(&a.out.join("metrics.jsonl"))?;
    println!(
        "deq train: {} params, vocab {}, data {source}, {} steps of {}×{} tokens, {} threads, on {}",
        trainer.model.store.numel(),
        corpus.vocab.len(),
        cfg.steps,
        cfg.batch,
        cfg.seq_len,
        rayon::current_num_threads(),
        a.device.describe()
    );
    let start = Instant::now();
    let mut progress = Progress::new(cfg.steps, trainer.step);
    let mut skipped_total = 0;
    let mut lr_scale = 1.0;
    let mut history = History::default();
    let trace_every = (cfg.steps / 5).max(1);
    while trainer.step < cfg.steps {
        trainer.cfg.schedule.lr = cfg.schedule.lr * lr_scale;
        trainer.cfg.schedule.min_lr = cfg.schedule.min_lr * lr_scale;
        let m = trainer.train_step(&train);
        skipped_total += m.skipped as usize;
        log.write(
            &json!({"kind": "train", "step": m.step, "loss": m.loss, "lr": m.lr,
            "grad_norm": m.grad_norm, "fwd_iters": m.fwd_iters, "fwd_resid": m.fwd_resid,
            "bwd_iters": m.bwd_iters, "bwd_resid": m.bwd_resid, "skipped": m.skipped,
            "tokens": m.tokens, "seconds": m.seconds, "fwd_trace": m.fwd_trace}),
        );
        progress.update(&m, skipped_total);
        history.train.push((m.step as f64, m.loss));
        if m.step % trace_every == 0 && !m.fwd_trace.is_empty() {
            history.traces.push((m.step, m.fwd_trace.clone()));
        }
        if trainer.skips >= MAX_SKIPS && last.is_file() {
            let ck = load_checkpoint(&last)?;
            let step = trainer.step;
            trainer = Trainer::from_checkpoint(&ck, &last, &corpus.vocab)?;
            trainer.to_device(a.device)?;
            trainer.step = step;
            lr_scale *= 0.5;
            progress.println(&format!(
                "step {step}: {MAX_SKIPS} non-finite steps in a row; reloaded the last good weights, learning rate ×{lr_scale}"
            ));
            log.write(&json!({"kind": "recover", "step": step, "lr_scale": lr_scale}));
        }
        let periodic = cfg.eval_every > 0 && trainer.step % cfg.eval_every == 0;
        if periodic || trainer.step == cfg.steps {
            let v = trainer.evaluate(&valid, cfg.eval_segments);
            progress.println(&format!(
                "step {:>6}: valid loss {v:.3}, ppl {:.1} (first {} segments)",
                trainer.step,
                v.exp(),
                cfg.eval_segments
            ));
            log.write(&json!({"kind": "valid", "step": trainer.step, "loss": v}));
            history.valid.push((trainer.step as f64, v));
            if v.is_finite() && v < trainer.best_valid {
                trainer.best_valid = v;
                save(&trainer, &corpus, &best)?;
            }
            save(&trainer, &corpus, &last)?;
        }
    }
    progress.finish();
    let train_secs = start.elapsed().as_secs_f64();
    let v = trainer.evaluate(&valid, 0);
    let t = trainer.evaluate(&test, 0);
    log.write(
        &json!({"kind": "final", "valid_loss": v, "test_loss": t, "train_seconds": train_secs,
        "tokens_per_second": progress.tokens_per_second()}),
    );
    println!(
        "trained {} steps in {:.0} s ({:.0} tokens/s); valid ppl {:.2}, test ppl {:.2}",
        trainer.step,
        train_secs,
        progress.tokens_per_second(),
        v.exp(),
        t.exp()
    );
    let plot = a.out.join("training.png");
    write_png(&plot, &history.panels())?;
    println!(
        "checkpoints, metrics and training.png in {}",
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What the end-of-run plot shows.
#[derive(Default)]
struct History {
    train: Vec<(f64, f64)>,
    valid: Vec<(f64, f64)>,
    traces: Vec<(usize, Vec<f64>)>,
}

impl History {
    fn panels(&self) -> Vec<Panel> {
        // Exponential moving average of the training loss (per-step losses are noisy).
        let mut ema = None;
        let smooth: Vec<(f64, f64)> = self
            .train
            .iter()
            .filter(|(_, l)| l.is_finite())
            .map(|&(s, l)| {
                let e = ema.map_or(l, |e: f64| 0.95 * e + 0.05 * l);
                ema = Some(e);
                (s, e)
            })
            .collect();
        let loss = Panel {
            title: "loss".into(),
            x_label: "step".into(),
            y_label: "cross-entropy (nats)".into(),
            log_y: false,
            series: vec![
                Series {
                    label: "train (EMA)".into(),
                    points: smooth,
                },
                Series {
                    label: "valid".into(),
                    points: self.valid.clone(),
                },
            ],
        };
        let traces = Panel {
            title: "forward solver residuals".into(),
            x_label: "iteration".into(),
            y_label: "relative residual".into(),
            log_y: true,
            series: self
                .traces
                .iter()
                .map(|(step, t)| Series {
                    label: format!("step {step}"),
                    points: t.iter().enumerate().map(|(i, &r)| (i as f64, r)).collect(),
                })
                .collect(),
        };
        vec![loss, traces]
    }
}
