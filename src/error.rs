//! One error type for the whole crate. Every variant that concerns a caller's
//! input names the argument, so a trainer's log says what to fix.

/// What to do when no adapter is found, on the platform built for: where the GPU
/// driver comes from differs, and so does the software adapter that stands in for one.
const NO_ADAPTER_HINT: &str = if cfg!(target_arch = "wasm32") {
    "the page needs a browser with WebGPU enabled (a recent Chrome or Edge; Firefox and \
     Safari in their recent releases, on some systems only), served over https or from \
     localhost"
} else if cfg!(target_os = "macos") {
    "Metal ships with macOS, so no driver is to be installed: check that the macOS version \
     is one wgpu supports, and that this is not a virtual machine without access to a GPU"
} else if cfg!(target_os = "windows") {
    "install or update the GPU's driver (DX12 or Vulkan); without a GPU, Windows' WARP \
     adapter (DX12, part of Windows) or Mesa's lavapipe (Vulkan) runs on the CPU"
} else if cfg!(target_os = "linux") {
    "on a machine without a GPU install Mesa's software drivers (`apt-get install \
     mesa-vulkan-drivers libvulkan1`)"
} else {
    "install the GPU's Vulkan or OpenGL ES driver, or, without a GPU, Mesa's software \
     drivers (lavapipe for Vulkan, llvmpipe for GL)"
};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched (none present, or `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` excluded all).
    #[error("no GPU adapter found{0}; {hint}", hint = NO_ADAPTER_HINT)]
    NoAdapter(String),

    /// The adapter refused to open a device.
    #[error("could not open a device on adapter `{adapter}`: {reason}")]
    RequestDevice {
        /// The adapter's name, as wgpu reports it.
        adapter: String,
        /// wgpu's reason, as it gave it.
        reason: String,
    },

    /// An argument does not fit (shape, offset, stride, dtype, usage, value).
    #[error("invalid argument `{arg}`: {reason}")]
    InvalidArgument {
        /// The argument, config field, tensor or CLI flag at fault, as the API names it
        /// (`logits`, `clip_ratio_low`, `keep_offsets`, …).
        arg: &'static str,
        /// What is wrong with it, and for a per-row value the first bad row.
        reason: String,
    },

    /// A token id on a row that is read lies outside `[0, vocab)`.
    #[error("invalid argument `targets`: row {row} has token id {id}, outside [0, {vocab})")]
    TargetOutOfRange {
        /// The first such row, counted over every part's rows in order.
        row: usize,
        /// Its token id, as the caller gave it (i64, so a negative id shows as such).
        id: i64,
        /// The vocabulary size `V`.
        vocab: u32,
    },

    /// A per-row input other than the logits holds a value the loss cannot use
    /// (docs/MATH.md#bad-input): a mask that is negative, NaN or ±inf on any row, or a
    /// NaN or ±inf advantage, old, ref or rollout log-prob on a masked-in row that the
    /// call reads. `row` counts every part's rows in order; for per-sequence advantages
    /// it is the first masked-in row of the sequence.
    #[error(
        "invalid argument `{}`: row {row} holds {value}; {}",
        tensor.name(),
        tensor.requirement()
    )]
    InvalidInput {
        /// Which input holds it.
        tensor: RowInput,
        /// The first bad row, counted over every part's rows in order.
        row: usize,
        /// The bad value (for [`RowInput::Targets`], the id as an f32).
        value: f32,
    },

    /// wgpu reported a validation, out-of-memory or internal error, or the device was lost.
    #[error("wgpu error: {0}")]
    Wgpu(String),
}

/// The per-row inputs of a loss call other than the logits and the ids, in the order
/// they are checked on each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowInput {
    /// The response mask `m`: bad when negative, NaN or ±inf, on any row.
    Mask,
    /// The advantages `A`: bad when NaN or ±inf on a masked-in row.
    Advantages,
    /// The behaviour policy's `old_logp`: bad when NaN or ±inf on a masked-in row.
    OldLogprobs,
    /// The reference policy's `ref_logp`: bad when NaN or ±inf on a masked-in row.
    RefLogprobs,
    /// The sampler's `rollout_logp`: bad when NaN or ±inf on a masked-in row that the
    /// rollout correction or the off-policy mask reads.
    RolloutLogprobs,
    /// Per-row sampling temperatures (docs/MATH.md#the-samplers-distribution): bad when
    /// not > 0, not finite, or with a reciprocal that is not finite, on a read row.
    Temperatures,
    /// The log-prob primitive's upstream gradient `a = ∂L/∂logp`
    /// (docs/MATH.md#the-log-prob-primitive): bad when NaN or ±inf.
    UpstreamLogprobs,
    /// The log-prob primitive's upstream gradient `b = ∂L/∂H`: bad when NaN or ±inf.
    UpstreamEntropy,
    /// The log-prob primitive's upstream gradient `c = ∂L/∂lse`: bad when NaN or ±inf.
    UpstreamLse,
    /// A read row's target outside its kept set (docs/MATH.md#the-samplers-distribution);
    /// the value is the id.
    Targets,
}

impl RowInput {
    /// Every input, in the order of their codes (1, 2, …) in reduce.wgsl's metrics.
    pub const ALL: [RowInput; 10] = [
        RowInput::Mask,
        RowInput::Advantages,
        RowInput::OldLogprobs,
        RowInput::RefLogprobs,
        RowInput::RolloutLogprobs,
        RowInput::Temperatures,
        RowInput::UpstreamLogprobs,
        RowInput::UpstreamEntropy,
        RowInput::UpstreamLse,
        RowInput::Targets,
    ];

    /// The argument's name, as the API, `eval`'s tensors and PyTorch call it.
    pub fn name(self) -> &'static str {
        match self {
            RowInput::Mask => "mask",
            RowInput::Advantages => "advantages",
            RowInput::OldLogprobs => "old_logprobs",
            RowInput::RefLogprobs => "ref_logprobs",
            RowInput::RolloutLogprobs => "rollout_logprobs",
            RowInput::Temperatures => "temperatures",
            RowInput::UpstreamLogprobs => "upstream_logprobs",
            RowInput::UpstreamEntropy => "upstream_entropy",
            RowInput::UpstreamLse => "upstream_lse",
            RowInput::Targets => "targets",
        }
    }

    fn requirement(self) -> &'static str {
        match self {
            RowInput::Mask => "a mask value must be finite and >= 0",
            RowInput::Temperatures => {
                "a row the call reads needs a finite temperature > 0 whose reciprocal is finite"
            }
            RowInput::Targets => "a row the call reads needs its target in its kept set",
            _ => "a masked-in row needs a finite value",
        }
    }

    /// Its code in reduce.wgsl's metrics (`BAD_*`): 1, 2, … in the order of [`ALL`](Self::ALL).
    pub(crate) const fn code(self) -> u32 {
        self as u32 + 1
    }

    /// The input of reduce.wgsl's code (`BAD_*`), 0 meaning none.
    pub(crate) fn from_code(code: u32) -> Option<RowInput> {
        Self::ALL.get((code as usize).checked_sub(1)?).copied()
    }

    /// Whether `value` is bad for this input on a row the loss reads (the mask: on
    /// any row).
    pub(crate) fn is_bad(self, value: f32) -> bool {
        match self {
            RowInput::Mask => !value.is_finite() || value < 0.0,
            // 1/τ is what the kernels multiply by: a subnormal τ would make it ±inf
            RowInput::Temperatures => !(value > 0.0 && (1.0 / value).is_finite()),
            // membership is not a property of the value: the kept set decides
            RowInput::Targets => false,
            _ => !value.is_finite(),
        }
    }
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
