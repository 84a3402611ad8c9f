//! Subcommands of the binary. Each lives in its own file and uses only the public API.

mod info;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wgpu-policy-loss",
    version,
    about = "RL policy loss from logits on any GPU wgpu reaches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter: backend, the paths used (f16, subgroups) and the limits that matter.
    Info,
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info::run(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
