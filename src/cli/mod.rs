//! Subcommands of the binary. Each lives in its own file and uses only the public API.

mod bench;
mod check;
mod demo;
mod eval;
mod info;

use clap::{Parser, Subcommand};
use wgpu_policy_loss::{Context, Error, OpenAdapters};

#[derive(Parser)]
#[command(
    name = "wgpu-policy-loss",
    version,
    about = "RL policy loss from logits on any GPU wgpu reaches"
)]
struct Cli {
    /// Without a subcommand: the demo.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a tiny policy with GRPO on the GPU using this loss (the default).
    Demo(demo::DemoArgs),
    /// List every adapter: backend, the paths used (f16, subgroups) and the limits that matter.
    Info,
    /// Loss, log-probs, entropies, gradient and metrics of a safetensors file.
    Eval(eval::EvalArgs),
    /// The fused loss against an unfused baseline and the copy roofline, per adapter.
    Bench(bench::BenchArgs),
    /// Every adapter, path, dtype and mode against the CPU reference; non-zero exit on failure.
    Check(check::CheckArgs),
}

/// What a subcommand returns: any error is printed and gives a non-zero exit.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

/// The adapters a subcommand runs on: the one `--adapter` names (which must open), or
/// every adapter that opens a device, with the ones that refused set aside to report.
fn open_adapters(adapter: Option<&str>) -> Result<OpenAdapters, Error> {
    match adapter {
        Some(name) => Ok(OpenAdapters {
            contexts: vec![Context::from_adapter(&Context::adapter_named(name)?)?],
            unavailable: Vec::new(),
        }),
        None => Context::open_all(),
    }
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) => c,
        None => match Cli::parse_from(["wgpu-policy-loss", "demo"]).command {
            Some(c) => c,
            None => unreachable!("`demo` parses as the demo"),
        },
    };
    let result = match command {
        Command::Demo(args) => demo::run(&args),
        Command::Info => info::run().map_err(Into::into),
        Command::Eval(args) => eval::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Check(args) => check::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
