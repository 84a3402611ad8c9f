//! The crate's errors: the library's (every one naming its argument), and Burn's.

/// What can go wrong in a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The library's error: a bad argument (named), a bad token id (its row), a bad
    /// per-row input, a wgpu error.
    #[error(transparent)]
    Loss(#[from] wgpu_policy_loss::Error),
    /// Burn failed: its runtime did not start, or a readback failed.
    #[error("{0}")]
    Burn(String),
}

impl Error {
    /// An invalid argument, named.
    pub(crate) fn arg(arg: &'static str, reason: impl Into<String>) -> Self {
        Error::Loss(wgpu_policy_loss::Error::InvalidArgument {
            arg,
            reason: reason.into(),
        })
    }
}

/// The crate's result: [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;
