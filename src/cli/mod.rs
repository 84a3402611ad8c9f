//! Subcommands of the binary. Each lives in its own file and uses only the public API.

mod bench;
mod check;
mod demo;
mod eval;
mod info;
mod progress;

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

/// The help of every subcommand's `--adapter`; [`command`] sets it on each, so that
/// none says otherwise. The rule is [`Context::adapter_named`]'s.
const ADAPTER_HELP: &str = "The adapter to run on: a backend (vulkan, gl, metal, dx12, \
    webgpu), lavapipe (Mesa's software Vulkan), or part of an adapter's \"name (Backend)\" \
    (case-insensitive). Where several match, the first in the order `info` lists them";

/// The command line, every `--adapter` with [`ADAPTER_HELP`].
fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let with_adapter: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| s.get_arguments().any(|a| a.get_id() == "adapter"))
        .map(|s| s.get_name().to_string())
        .collect();
    for name in with_adapter {
        cmd = cmd.mut_subcommand(name, |s| {
            s.mut_arg("adapter", |a| a.help(ADAPTER_HELP).long_help(None::<&str>))
        });
    }
    cmd
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

/// The ids of `sub`'s arguments given on the command line (not their groups).
fn given_flags(matches: &clap::ArgMatches, sub: &str) -> Vec<String> {
    let cmd = command();
    let (Some(m), Some(cmd)) = (matches.subcommand_matches(sub), cmd.find_subcommand(sub)) else {
        return Vec::new();
    };
    let from_line = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    cmd.get_arguments()
        .map(|a| a.get_id().as_str().to_string())
        .filter(|id| from_line(id))
        .collect()
}

pub fn main() -> std::process::ExitCode {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // the flags given on `eval`'s command line (the log-prob primitive takes few)
    let given = given_flags(&matches, "eval");
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
        Command::Eval(args) => eval::run(&args, &given),
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
