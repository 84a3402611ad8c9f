//! Reinforcement-learning policy loss of a language model, computed straight from its
//! logits in WGSL compute kernels on any GPU wgpu reaches (Vulkan, Metal, DX12, GL).
//!
//! The math is `SPEC.md`'s. Kernels read the caller's device buffers through views
//! ([`LogitsView`], [`TargetsView`]), record into the caller's command encoder and
//! leave their results on the device; [`Context::row_stats`] and friends wrap that for
//! host slices. [`reference`](mod@reference) is the f64 CPU reference everything is tested against.

// the benchmarks (and what only they use) are native only
#![cfg_attr(target_arch = "wasm32", allow(dead_code))]

mod config;
mod context;
mod error;
mod host;
mod kernels;
mod loss;
pub mod reference;
mod shader;
mod shards;
mod view;

pub use config::{
    AdvantageEstimator, ImportanceSamplingLevel, KlEstimator, LossAggMode, LossConfig,
    PolicyLossMode, RolloutCorrection, RolloutLevel, RolloutMode, TrlLossType,
};
#[cfg(not(target_arch = "wasm32"))]
pub use context::adapters;
pub use context::{
    available_paths, describe_info, instance, Allocations, Context, OpenAdapters, Paths,
    Unavailable, FAIL_DEVICE_ENV, STRICT_ENV,
};
pub use error::{Error, Result, RowInput};
pub use host::{
    check_targets, HostBatch, HostGrad, HostHead, HostHeadLoss, HostLogProbs, HostLogProbsHead,
    HostLogits, HostLoss, HostPart, RowStatsHost,
};
pub use kernels::advantages::check_groups;
pub use kernels::row_stats::{RowStatsBuffers, RowStatsOutputs};
pub use loss::{
    Advantages, GradView, Gradient, HeadGradients, HeadInputs, InvalidInput, LogProbConfig,
    LogProbHeadInputs, LogProbInputs, LogProbs, LossBuffers, LossInputs, LossOutputs, LossPart,
    MatrixView, Metrics, PolicyLoss, Upstream, VocabBlocks,
};
#[cfg(feature = "tools")]
#[doc(hidden)]
pub mod tools;
#[cfg(all(feature = "tools", not(target_arch = "wasm32")))]
#[doc(hidden)]
pub use tools::bench;
#[cfg(feature = "tools")]
#[doc(hidden)]
pub use tools::check;
#[cfg(feature = "tools")]
#[doc(hidden)]
pub use tools::demo::{Demo, DemoConfig};

/// The tooling interface (not the trainer's API): every pipeline variant the crate can
/// build, each with its name, complete WGSL source ([`PipelineKey::source`](tooling::PipelineKey::source)),
/// override constants and entry point. `tests/shaders.rs` validates and translates
/// them all with naga; `scripts/gpu-isa.sh` compiles them offline to RDNA3 ISA.
#[doc(hidden)]
pub mod tooling {
    pub use crate::shader::{shader_variants, GradOut, Kernel, PipelineKey, SamplerMap};
}
pub use shards::{VocabShards, PARTIAL_BYTES, PARTIAL_FLOATS};
#[doc(hidden)]
pub use tooling::{shader_variants, GradOut, Kernel, PipelineKey, SamplerMap};
pub use view::{DType, F32View, KeptView, LogitsView, RowLayout, TargetsView};

/// Re-exported so callers use the same wgpu (and half) versions as this crate.
pub use half;
pub use wgpu;

/// The README's and the documents' examples run as doctests, so they cannot rot.
#[cfg(doctest)]
mod doc_examples {
    #[doc = include_str!("../README.md")]
    pub struct Readme;
    #[doc = include_str!("../docs/API.md")]
    pub struct Api;
    #[doc = include_str!("../docs/LOSSES.md")]
    pub struct Losses;
    #[doc = include_str!("../docs/SAMPLER.md")]
    pub struct Sampler;
    #[doc = include_str!("../docs/HEAD.md")]
    pub struct Head;
    #[doc = include_str!("../docs/SHARDS.md")]
    pub struct Shards;
    #[doc = include_str!("../docs/BURN.md")]
    pub struct Burn;
}
