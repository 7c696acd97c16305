//! `deq train`: the arguments and the order of things (configure or resume, check sizes,
//! open the run directory, train, evaluate the best checkpoint). Each concern has its own
//! file: [`setup`] (configuration and the resume rules), [`run_dir`] (one directory per run),
//! [`session`] (the training loop, periodic evaluation, saving), [`recovery`] (non-finite
//! streaks), [`history`] (the plot).

mod budget;
mod history;
mod recovery;
mod run_dir;
mod session;
mod setup;

pub use history::redraw;

use super::args::{DataArgs, MachineArgs};
use super::ModelArg;
use clap::Args;
use deq_models::error::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `deq train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Preset: tiny (the default, minutes on 2 cores), ptb-small (the real PTB run), ptb-1h
    /// (one hour of wall time: --minutes 60), trellis-tiny, ptb-trellis.
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    /// Cell; `trellisnet` switches a transformer preset to its TrellisNet twin.
    #[arg(long, value_enum, conflicts_with = "config")]
    model: Option<ModelArg>,
    /// A JSON training configuration, as `--print-config` writes it (unknown keys are
    /// rejected); replaces the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Training steps (the warm-up, pre-training and evaluation interval follow; on
    /// `--resume`: extends or shortens the run, see README).
    #[arg(long)]
    steps: Option<usize>,
    /// A wall-time budget in minutes, for any preset: the step count (and with it the
    /// schedule) is planned from the speed a probe measures before the first step, and
    /// re-planned at each evaluation so the run, final evaluation included, ends on time.
    #[arg(long, conflicts_with = "steps")]
    minutes: Option<f64>,
    /// Streams per training batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per training segment.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Peak learning rate (the final rate is a twentieth of it).
    #[arg(long)]
    lr: Option<f64>,
    /// Random seed of initialisation, dropout and data order.
    #[arg(long)]
    seed: Option<u64>,
    /// Jacobian regularisation: weight of ‖J_f(z*)‖²_F / N in the loss (0: off; default the
    /// preset's: 0.3 for ptb-1h, 0 for the others; the reference's DEQ-Transformer runs use
    /// about 2).
    #[arg(long)]
    jac_weight: Option<f64>,
    /// Jacobian regularisation: probability that a step adds the penalty (default 0.35).
    #[arg(long)]
    jac_freq: Option<f64>,
    /// Streams of the validation and test evaluations.
    #[arg(long)]
    eval_batch: Option<usize>,
    /// Tokens per evaluation segment.
    #[arg(long)]
    eval_seq_len: Option<usize>,
    /// DEQ-Transformer: positions of attention memory while evaluating.
    #[arg(long)]
    eval_mem_len: Option<usize>,
    /// Print the configuration as the JSON that `--config` accepts, and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    pub machine: MachineArgs,
    /// The run's directory [default: runs/NAME; on --resume: the checkpoint's directory].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The run's name: it writes into runs/NAME [default: the start time, e.g.
    /// 20250114-093012]. runs/latest points at the newest run.
    #[arg(long, conflicts_with = "out")]
    name: Option<String>,
    /// Continue a run from one of its checkpoints (e.g. runs/NAME/last.safetensors).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Also save last.safetensors every this many minutes of wall time (0: only at
    /// evaluations).
    #[arg(long, default_value_t = 10.0)]
    save_every: f64,
    /// Stop after this step as an interruption would (last.safetensors saved, no final
    /// evaluation); continue later with --resume.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Without a terminal on stdout: seconds between progress lines (0: every step).
    #[arg(long, default_value_t = 30.0)]
    progress_every: f64,
}

/// Runs `deq train`.
pub fn run(a: TrainArgs) -> Result<ExitCode> {
    let start = std::time::Instant::now();
    // Check the device first: a missing GPU fails at once, before any data is read.
    a.machine.device.open()?;
    let plan = match &a.resume {
        Some(path) => setup::resume(&a, path)?,
        None => setup::fresh(&a)?,
    };
    if a.print_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan.trainer.cfg).expect("configs serialise")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let options = session::Options::from_args(&a)?;
    let Some(minutes) = budget_minutes(&a) else {
        return session::Session::start(plan, options)?.run();
    };
    if !(minutes.is_finite() && minutes > 0.0) {
        return Err(deq_models::error::DeqError::config(format!(
            "--minutes must be > 0, got {minutes}"
        )));
    }
    let mut plan = plan;
    let device = a.machine.device;
    println!("deq train: timing a few steps and an evaluation to plan {minutes} minutes");
    // The trainer set up for the preset's provisional step count serves as the probe's.
    let (budget, cfg) = budget::Budget::plan(minutes, start, plan.trainer, &plan.corpus, device)?;
    plan.trainer = deq_models::train::Trainer::new(cfg);
    session::Session::start(plan, options)?
        .with_budget(budget)
        .run()
}

/// `--minutes`, or a timed preset's budget when neither `--minutes` nor `--steps` is given
/// (a fresh run only: a resumed run continues as a step count).
fn budget_minutes(a: &TrainArgs) -> Option<f64> {
    if a.minutes.is_some() || a.steps.is_some() || a.resume.is_some() || a.config.is_some() {
        return a.minutes;
    }
    let preset = a.preset.as_deref()?;
    let mut timed = deq_models::config::TIMED_PRESETS.iter();
    timed.find(|(name, _)| *name == preset).map(|(_, m)| *m)
}
