//! The `wgpu-policy-loss` command: a user of the library like any other.

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

/// The command is a native program (it waits on the GPU, reads files, prints); in the
/// browser the library runs through `web/` (the demo page and its check).
#[cfg(target_arch = "wasm32")]
fn main() {}
