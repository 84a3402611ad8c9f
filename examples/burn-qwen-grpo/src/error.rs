//! What can go wrong making, loading and saving a model.

use std::path::PathBuf;

/// An error naming what it is about: the configuration field, the file, or the
/// checkpoint tensor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration does not describe a model this crate builds.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not what it should be (JSON, safetensors).
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// A tensor the model needs is in no weights file of the checkpoint.
    #[error("tensor `{name}` is missing from the checkpoint in {}", dir.display())]
    Missing { name: String, dir: PathBuf },
    /// A tensor's shape is not the configuration's.
    #[error("tensor `{name}` has shape {got:?}, the configuration gives {expected:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A tensor is stored in a dtype the loader does not convert.
    #[error("tensor `{name}` is stored as {dtype}; the loader reads F32, F64, BF16 and F16")]
    Dtype { name: String, dtype: String },
    /// A tensor's values are unusable, or could not be read back from the device.
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },
}
