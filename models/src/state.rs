//! Saving and restoring a [`Trainer`] through a checkpoint: weights, optimiser moments, the
//! data position, the memory carried between segments and the random state, so that a resumed
//! run reproduces the losses of an uninterrupted one exactly.

use crate::checkpoint::Checkpoint;
use crate::data::Vocab;
use crate::error::{DeqError, Result};
use crate::lm::{LanguageModel, Memory};
use crate::optim::Adam;
use crate::train::{TrainConfig, Trainer};
use deq_autograd::{Rng, Tensor};
use std::path::Path;

const CONFIG: &str = "deq.config";
const STEP: &str = "deq.step";
const POSITION: &str = "deq.position";
const RNG: &str = "deq.rng";
const BEST: &str = "deq.best_valid";
const ADAM_T: &str = "deq.adam_t";
const SKIPS: &str = "deq.skips";
const LR_SCALE: &str = "deq.lr_scale";

fn parse<V: std::str::FromStr>(ck: &Checkpoint, key: &str, path: &Path) -> Result<V> {
    let raw = ck.meta(key, path)?;
    raw.parse().map_err(|_| {
        DeqError::checkpoint(
            path,
            format!("metadata {key:?} is not a valid number: {raw:?}"),
        )
    })
}

impl Trainer {
    /// Everything needed to resume, as a checkpoint for `vocab`.
    pub fn to_checkpoint(&self, vocab: &Vocab) -> Checkpoint {
        let mut ck = Checkpoint::new();
        let store = &self.model.store;
        for (name, value) in store.names().iter().zip(store.values()) {
            ck.push(name.clone(), value.clone());
        }
        for (i, name) in store.names().iter().enumerate() {
            ck.push(format!("adam.m.{name}"), self.adam.m[i].clone());
            ck.push(format!("adam.v.{name}"), self.adam.v[i].clone());
        }
        if let Some(z) = &self.memory.z {
            ck.push("memory.z", z.clone());
        }
        if let Some(u) = &self.memory.u {
            ck.push("memory.u", u.clone());
        }
        let meta = &mut ck.metadata;
        meta.insert(
            CONFIG.into(),
            serde_json::to_string(&self.cfg).expect("config serialises"),
        );
        meta.insert(STEP.into(), self.step.to_string());
        meta.insert(POSITION.into(), self.position.to_string());
        let s = self.rng.state();
        meta.insert(
            RNG.into(),
            format!("{:016x}{:016x}{:016x}{:016x}", s[0], s[1], s[2], s[3]),
        );
        meta.insert(BEST.into(), format!("{:e}", self.best_valid));
        meta.insert(ADAM_T.into(), self.adam.t.to_string());
        meta.insert(SKIPS.into(), self.skips.to_string());
        meta.insert(LR_SCALE.into(), format!("{:e}", self.lr_scale));
        ck.set_vocab(vocab);
        ck
    }

    /// The configuration stored in a checkpoint (validated).
    pub fn config_of(ck: &Checkpoint, path: &Path) -> Result<TrainConfig> {
        let cfg: TrainConfig = serde_json::from_str(ck.meta(CONFIG, path)?)
            .map_err(|e| DeqError::checkpoint(path, format!("bad configuration: {e}")))?;
        cfg.validate()
            .map_err(|e| DeqError::checkpoint(path, format!("bad configuration: {e}")))?;
        Ok(cfg)
    }

    /// Restores a trainer saved with [`Trainer::to_checkpoint`], checking the vocabulary hash,
    /// every tensor's presence and shape against the stored configuration, and finiteness.
    pub fn from_checkpoint(ck: &Checkpoint, path: &Path, vocab: &Vocab) -> Result<Trainer> {
        ck.check_vocab(vocab, path)?;
        let cfg = Trainer::config_of(ck, path)?;
        if cfg.model.vocab != vocab.len() {
            return Err(DeqError::checkpoint(
                path,
                format!(
                    "model vocabulary size {} differs from the data's {}",
                    cfg.model.vocab,
                    vocab.len()
                ),
            ));
        }
        if let Some(name) = ck.first_non_finite() {
            return Err(DeqError::checkpoint(
                path,
                format!("tensor {name:?} holds NaN or infinite values"),
            ));
        }
        let mut model = LanguageModel::<f32>::new(&cfg.model, &mut Rng::new(cfg.seed));
        let names = model.store.names().to_vec();
        let mut m = Vec::with_capacity(names.len());
        let mut v = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let shape = model.store.values()[i].shape().to_vec();
            model.store.values_mut()[i] = ck.tensor(name, &shape, path)?.clone();
            m.push(ck.tensor(&format!("adam.m.{name}"), &shape, path)?.clone());
            v.push(ck.tensor(&format!("adam.v.{name}"), &shape, path)?.clone());
        }
        let adam = Adam {
            cfg: cfg.adam.clone(),
            m,
            v,
            t: parse(ck, ADAM_T, path)?,
        };
        let memory = Memory {
            z: memory_tensor(ck, "memory.z", cfg.batch, path)?,
            u: memory_tensor(ck, "memory.u", cfg.batch, path)?,
        };
        let rng_hex = ck.meta(RNG, path)?;
        let rng = parse_rng(rng_hex)
            .ok_or_else(|| DeqError::checkpoint(path, format!("bad random state {rng_hex:?}")))?;
        Ok(Trainer {
            step: parse(ck, STEP, path)?,
            position: parse(ck, POSITION, path)?,
            best_valid: parse(ck, BEST, path)?,
            skips: parse(ck, SKIPS, path)?,
            // Checkpoints written before recoveries were recorded ran at the full rate.
            lr_scale: match ck.metadata.get(LR_SCALE) {
                Some(_) => parse(ck, LR_SCALE, path)?,
                None => 1.0,
            },
            rng,
            memory,
            adam,
            model,
            cfg,
        })
    }
}

fn memory_tensor(
    ck: &Checkpoint,
    name: &str,
    batch: usize,
    path: &Path,
) -> Result<Option<Tensor<f32>>> {
    match ck.get(name) {
        None => Ok(None),
        Some(t) if t.ndim() == 3 && t.shape()[0] == batch => Ok(Some(t.clone())),
        Some(t) => Err(DeqError::checkpoint(
            path,
            format!(
                "tensor {name:?} has shape {:?}, expected [{batch}, _, _]",
                t.shape()
            ),
        )),
    }
}

fn parse_rng(hex: &str) -> Option<Rng> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut s = [0u64; 4];
    for (i, word) in s.iter_mut().enumerate() {
        *word = u64::from_str_radix(&hex[i * 16..(i + 1) * 16], 16).ok()?;
    }
    Some(Rng::from_state(s))
}
