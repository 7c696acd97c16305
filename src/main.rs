//! `deq`: train, evaluate and sample DEQ language models, check gradients, run benchmarks.
//!
//! Every error from outside (files, data, checkpoints, configs, flags) is reported as one
//! `error: …` line on stderr with exit status 2; a failed gradient check exits with status 1.

mod cli;

use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: cli::bench::alloc::Counting = cli::bench::alloc::Counting;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
