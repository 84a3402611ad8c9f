//! What the binary, the benchmarks and the browser page run, beside the library: the
//! benchmark harness, the cross-path checker and the GRPO demo. Behind the `tools`
//! feature (on with `cli`, the default): a trainer that links the library with
//! `default-features = false` compiles none of it.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod check;
pub mod demo;
