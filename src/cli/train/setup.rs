//! What a run starts from: a fresh configuration (preset or `--config`, then the flags), or a
//! checkpoint to resume with the resume rules; and the size checks against the data and the
//! machine, done before the model is allocated.

use super::TrainArgs;
use crate::cli::args::DataArgs;
use crate::cli::{data_source, existing_file, machine, LevelArg, ModelArg};
use deq_models::checkpoint::{load_checkpoint, Checkpoint};
use deq_models::data::Corpus;
use deq_models::error::{DeqError, Result};
use deq_models::sizes;
use deq_models::train::{TrainConfig, Trainer};
use std::path::{Path, PathBuf};

/// Checkpoint metadata: the data source (see [`data_source::identity`]).
pub const DATA_KEY: &str = "deq.data";
/// Checkpoint metadata: the tokenisation level ("word", "char").
pub const LEVEL_KEY: &str = "deq.level";

/// The flags that apply on `--resume`; every other one is refused.
pub const RESUME_FLAGS: &str = "--steps, --out, --name, --threads, --device, --save-every, \
                                --stop-after, --progress-every (and --data/--level when they \
                                name the run's own data)";

/// A run ready to start: its trainer (fresh or restored), its data, and where it resumed.
pub struct Plan {
    /// The trainer, on the host.
    pub trainer: Trainer,
    /// The corpus.
    pub corpus: Corpus,
    /// The data source for the first line of output.
    pub source: String,
    /// The data source and level as recorded in checkpoints ([`DATA_KEY`], [`LEVEL_KEY`]).
    pub data_meta: [(String, String); 2],
    /// Set when resuming: the checkpoint and its step.
    pub resumed: Option<(PathBuf, usize)>,
}

/// A fresh run: the configuration of the preset or `--config`, then the flags.
pub fn fresh(a: &TrainArgs) -> Result<Plan> {
    let (corpus, source) = data_source::load(&a.data)?;
    let cfg = configure(a, &corpus)?;
    check_sizes(&cfg, &corpus, a)?;
    Ok(Plan {
        data_meta: data_meta(a.data.data.as_deref(), a.data.level_or_default()),
        trainer: Trainer::new(cfg),
        corpus,
        source,
        resumed: None,
    })
}

/// The configuration of a fresh run (validated, its vocabulary set from the data).
fn configure(a: &TrainArgs, corpus: &Corpus) -> Result<TrainConfig> {
    let mut cfg = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| DeqError::io(path, e))?;
            serde_json::from_str::<TrainConfig>(&text)
                .map_err(|e| DeqError::config(format!("{}: {e}", path.display())))?
        }
        None => TrainConfig::preset(preset_name(a)?).map_err(DeqError::config)?,
    };
    if let Some(s) = a.steps {
        cfg.set_steps(s);
    }
    if let Some(b) = a.batch {
        cfg.batch = b;
    }
    if let Some(t) = a.seq_len {
        cfg.seq_len = t;
    }
    if let Some(lr) = a.lr {
        cfg.set_lr(lr);
    }
    if let Some(seed) = a.seed {
        cfg.seed = seed;
    }
    if let Some(w) = a.jac_weight {
        cfg.jac.weight = w;
    }
    if let Some(f) = a.jac_freq {
        cfg.jac.freq = f;
    }
    if let Some(b) = a.eval_batch {
        cfg.eval.batch = b;
    }
    if let Some(t) = a.eval_seq_len {
        cfg.eval.seq_len = t;
    }
    if a.eval_mem_len.is_some() {
        cfg.eval.mem_len = a.eval_mem_len;
    }
    cfg.model.vocab = corpus.vocab.len();
    cfg.validate().map_err(DeqError::config)?;
    Ok(cfg)
}

/// `--preset`, switched to its twin by `--model`.
fn preset_name(a: &TrainArgs) -> Result<&str> {
    Ok(match (a.model, a.preset.as_deref().unwrap_or("tiny")) {
        (Some(ModelArg::Trellisnet), "ptb-1h") => {
            return Err(DeqError::config(
                "--preset ptb-1h has no TrellisNet twin; for a one-hour TrellisNet run use \
                 --preset ptb-trellis --minutes 60",
            ))
        }
        (Some(ModelArg::Trellisnet), "tiny") => "trellis-tiny",
        (Some(ModelArg::Trellisnet), "ptb-small") => "ptb-trellis",
        (Some(ModelArg::Transformer), "trellis-tiny") => "tiny",
        (Some(ModelArg::Transformer), "ptb-trellis") => "ptb-small",
        (_, p) => p,
    })
}

/// The sizes against the data (every segment fits a stream) and the machine (a lower bound of
/// a training step's and an evaluation's memory fits what is available).
fn check_sizes(cfg: &TrainConfig, corpus: &Corpus, a: &TrainArgs) -> Result<()> {
    let (train, valid, test) = (corpus.train.len(), corpus.valid.len(), corpus.test.len());
    sizes::check_data(cfg, train, valid, test).map_err(DeqError::config)?;
    let device = a.machine.device;
    machine::check_fits(&sizes::train_step_bound(cfg), "a training step", device)?;
    machine::check_fits(&sizes::eval_bound(cfg), "an evaluation", device)
}

fn data_meta(dir: Option<&Path>, level: LevelArg) -> [(String, String); 2] {
    [
        (DATA_KEY.to_string(), data_source::identity(dir)),
        (
            LEVEL_KEY.to_string(),
            data_source::level_name(level).to_string(),
        ),
    ]
}

/// A resumed run: the checkpoint's trainer, data and configuration, with `--steps` extending
/// it by [`TrainConfig::extend_to`]. Every flag that would change the run is an error naming
/// it.
pub fn resume(a: &TrainArgs, path: &Path) -> Result<Plan> {
    existing_file(path, "checkpoint")?;
    let ck = load_checkpoint(path)?;
    refuse_changes(a)?;
    let data = resumed_data(a, &ck)?;
    let (corpus, source) = data_source::load(&data)?;
    let mut trainer = Trainer::from_checkpoint(&ck, path, &corpus.vocab)?;
    if let Some(n) = a.steps {
        if n < trainer.step {
            return Err(DeqError::config(format!(
                "--steps {n}: the run has already done {} steps",
                trainer.step
            )));
        }
        trainer.cfg.extend_to(n);
    }
    if trainer.step >= trainer.cfg.steps {
        return Err(DeqError::config(format!(
            "the run has done all its {} steps; extend it with --steps N",
            trainer.cfg.steps
        )));
    }
    trainer.cfg.validate().map_err(DeqError::config)?;
    check_sizes(&trainer.cfg, &corpus, a)?;
    let step = trainer.step;
    Ok(Plan {
        data_meta: data_meta(data.data.as_deref(), data.level_or_default()),
        trainer,
        corpus,
        source,
        resumed: Some((path.to_path_buf(), step)),
    })
}

/// The flags given that cannot change on resume (the configuration is the checkpoint's).
fn refuse_changes(a: &TrainArgs) -> Result<()> {
    let given = [
        ("--preset", a.preset.is_some()),
        ("--model", a.model.is_some()),
        ("--config", a.config.is_some()),
        ("--batch", a.batch.is_some()),
        ("--seq-len", a.seq_len.is_some()),
        ("--lr", a.lr.is_some()),
        ("--seed", a.seed.is_some()),
        ("--minutes", a.minutes.is_some()),
        ("--jac-weight", a.jac_weight.is_some()),
        ("--jac-freq", a.jac_freq.is_some()),
        ("--eval-batch", a.eval_batch.is_some()),
        ("--eval-seq-len", a.eval_seq_len.is_some()),
        ("--eval-mem-len", a.eval_mem_len.is_some()),
    ];
    let refused: Vec<&str> = given.iter().filter(|g| g.1).map(|g| g.0).collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(DeqError::config(format!(
        "{} cannot change on resume (the run's configuration is in its checkpoint); on resume \
         only {RESUME_FLAGS} apply",
        refused.join(", ")
    )))
}

/// The data of a resumed run: what its checkpoint records, which `--data`/`--level` may
/// repeat but not change (checkpoints from before the record take the flags as given).
fn resumed_data(a: &TrainArgs, ck: &Checkpoint) -> Result<DataArgs> {
    let stored_data = ck.metadata.get(DATA_KEY);
    let stored_level = ck
        .metadata
        .get(LEVEL_KEY)
        .and_then(|l| data_source::level_from_name(l));
    if let (Some(stored), Some(given)) = (stored_data, &a.data.data) {
        if data_source::identity(Some(given)) != *stored {
            return Err(DeqError::config(format!(
                "--data cannot change on resume: the run trains on {stored}"
            )));
        }
    }
    if let (Some(stored), Some(given)) = (stored_level, a.data.level) {
        if stored != given {
            return Err(DeqError::config(format!(
                "--level cannot change on resume: the run is {}-level",
                data_source::level_name(stored)
            )));
        }
    }
    let data = match (stored_data, &a.data.data) {
        (_, Some(given)) => Some(given.clone()),
        (Some(stored), None) if stored != data_source::BUNDLED => Some(PathBuf::from(stored)),
        _ => None,
    };
    Ok(DataArgs {
        data,
        level: a.data.level.or(stored_level),
    })
}
