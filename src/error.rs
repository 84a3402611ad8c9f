//! One error type for the whole crate. Every variant that concerns a caller's
//! input names the argument, so a trainer's log says what to fix.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched (none present, or `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` excluded all).
    #[error("no GPU adapter found{0}; on a machine without a GPU install Mesa's software drivers (`apt-get install mesa-vulkan-drivers libvulkan1`)")]
    NoAdapter(String),

    /// The adapter refused to open a device.
    #[error("could not open a device on adapter `{adapter}`: {reason}")]
    RequestDevice { adapter: String, reason: String },

    /// An argument does not fit (shape, offset, stride, dtype, usage, value).
    #[error("invalid argument `{arg}`: {reason}")]
    InvalidArgument { arg: &'static str, reason: String },

    /// A token id on a row that is read lies outside `[0, vocab)`.
    #[error("invalid argument `targets`: row {row} has token id {id}, outside [0, {vocab})")]
    TargetOutOfRange { row: usize, id: i64, vocab: u32 },

    /// wgpu reported a validation, out-of-memory or internal error, or the device was lost.
    #[error("wgpu error: {0}")]
    Wgpu(String),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn arg(arg: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            arg,
            reason: reason.into(),
        }
    }
}
