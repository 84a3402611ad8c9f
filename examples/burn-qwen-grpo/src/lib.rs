//! A decoder-only policy with the Qwen2 architecture in Burn, and its Hugging Face
//! checkpoint: [`model`] builds and runs it, [`load()`] reads a checkpoint (`config.json`
//! and safetensors in HF's names and layouts), [`save()`] writes one.

pub mod error;
mod hf;
pub mod load;
pub mod model;
pub mod sample;
pub mod save;

pub use error::Error;
pub use load::{load, read_config};
pub use model::{KvCache, Qwen2, Qwen2Config};
pub use save::{save, write_config, write_tensors, HfTensor, StoreDtype};
