//! Trains the DEQ-Transformer language model on the bundled Penn Treebank on a CUDA GPU.
//!
//! ```text
//! cargo run --release --example gpu_train -- [--device cuda:0] [--preset ptb-small]
//!                                            [--steps N] [--minutes M]
//! ```
//!
//! It prints a progress line every 50 steps (loss, solver iterations, tokens/s), then the
//! training throughput and the peak GPU memory of the caching allocator, then the validation
//! and test perplexity. `--minutes` stops training after that much wall time (the GPU check
//! script runs it for 2 minutes). Without a GPU it exits with status 2 and says why.

use deq_autograd::Device;
use deq_models::data::{batchify, Corpus, Level};
use deq_models::train::{TrainConfig, Trainer};
use std::process::ExitCode;
use std::time::Instant;

const PTB_TRAIN: &str = include_str!("../data/ptb/ptb.train.txt");
const PTB_VALID: &str = include_str!("../data/ptb/ptb.valid.txt");
const PTB_TEST: &str = include_str!("../data/ptb/ptb.test.txt");

struct Options {
    device: Device,
    preset: String,
    steps: Option<usize>,
    minutes: Option<f64>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        device: Device::Cuda(0),
        preset: "ptb-small".into(),
        steps: None,
        minutes: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => o.device = value()?.parse().map_err(|e| format!("{e}"))?,
            "--preset" => o.preset = value()?,
            "--steps" => {
                o.steps = Some(value()?.parse().map_err(|_| "--steps: not a number")?);
            }
            "--minutes" => {
                o.minutes = Some(value()?.parse().map_err(|_| "--minutes: not a number")?);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let o = parse_args()?;
    o.device.open().map_err(|e| e.to_string())?;
    let corpus = Corpus::from_texts(PTB_TRAIN, PTB_VALID, PTB_TEST, Level::Word)
        .map_err(|e| e.to_string())?;
    let mut cfg = TrainConfig::preset(&o.preset)?;
    cfg.model.vocab = corpus.vocab.len();
    if let Some(steps) = o.steps {
        cfg.steps = steps;
        cfg.schedule.total = steps;
    }
    let train = batchify(&corpus.train, cfg.batch).map_err(|e| e.to_string())?;
    let valid = batchify(&corpus.valid, cfg.batch).map_err(|e| e.to_string())?;
    let test = batchify(&corpus.test, cfg.batch).map_err(|e| e.to_string())?;
    let mut trainer = Trainer::new(cfg.clone());
    trainer.to_device(o.device).map_err(|e| e.to_string())?;
    println!(
        "gpu_train: preset {}, {} parameters, {} steps of {}x{} tokens on {}",
        o.preset,
        trainer.model.store.numel(),
        cfg.steps,
        cfg.batch,
        cfg.seq_len,
        o.device.describe()
    );
    let start = Instant::now();
    let (mut tokens, mut skipped) = (0usize, 0usize);
    while trainer.step < cfg.steps {
        let m = trainer.train_step(&train);
        tokens += m.tokens;
        skipped += m.skipped as usize;
        let secs = start.elapsed().as_secs_f64();
        if m.step.is_multiple_of(50) || m.step == 1 {
            println!(
                "step {:>6}  loss {:.3}  fwd {:>2} it  bwd {:>2} it  {:.0} tokens/s  {:.0} s",
                m.step,
                m.loss,
                m.fwd_iters,
                m.bwd_iters,
                tokens as f64 / secs,
                secs
            );
        }
        if o.minutes.is_some_and(|min| secs > min * 60.0) {
            println!(
                "stopping after {:.1} minutes ({} steps)",
                secs / 60.0,
                m.step
            );
            break;
        }
    }
    let train_secs = start.elapsed().as_secs_f64();
    // The training figures first, so that a run cut short during evaluation keeps them.
    println!(
        "trained {} steps in {:.0} s: {:.0} tokens/s, {skipped} skipped",
        trainer.step,
        train_secs,
        tokens as f64 / train_secs
    );
    if let Device::Cuda(n) = o.device {
        let gpu = deq_cuda::Gpu::open(n).map_err(|e| e.to_string())?;
        let mem = gpu.memory_stats();
        println!(
            "peak GPU memory (caching allocator): {:.1} MiB live at peak, {:.1} MiB cached now",
            mem.peak_bytes as f64 / 1048576.0,
            mem.cached_bytes as f64 / 1048576.0
        );
    }
    let eval_start = Instant::now();
    let v = trainer.evaluate(&valid, 0);
    let t = trainer.evaluate(&test, 0);
    println!(
        "evaluated in {:.0} s: valid ppl {:.2}, test ppl {:.2}",
        eval_start.elapsed().as_secs_f64(),
        v.exp(),
        t.exp()
    );
    Ok(())
}
