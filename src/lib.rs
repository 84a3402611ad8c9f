//! Reinforcement-learning policy loss of a language model, computed straight from its
//! logits in WGSL compute kernels on any GPU wgpu reaches (Vulkan, Metal, DX12, GL,
//! WebGPU).
//!
//! One fused pass per logits row gives the log-sum-exp, the sampled token's log-prob and
//! the entropy (f32, f16 or bf16 logits, f32 accumulation), and from them the loss, its
//! metrics and ∂Loss/∂logits; no `[T, V]` intermediate is ever held. The policy modes of
//! verl and TRL ([`PolicyLossMode`]), the KL and entropy terms, the aggregations, the
//! rollout correction and the sampler's distribution (softcap, per-row temperature,
//! top-k / top-p / min-p or given kept sets) are all options of one [`LossConfig`]. What
//! every call computes, formula by formula, is the repository's `docs/MATH.md` (shipped
//! with the crate's sources); the item docs name its sections, as in
//! `docs/MATH.md#policy-modes-of-2025`.
//!
//! # Where to start
//!
//! - **Host slices**: [`Context`] opens a device ([`Context::new`], or wraps yours with
//!   [`Context::from_wgpu`]); [`Context::policy_loss`] takes a [`HostBatch`], checks it
//!   (an [`Error`] naming the argument and the first bad row), runs the forward and
//!   backward and reads everything back as a [`HostLoss`]. [`Context::policy_loss_head`]
//!   does the same from hidden states and the lm-head weight, [`Context::advantages`]
//!   turns rewards into advantages.
//! - **Device buffers** (a trainer): [`PolicyLoss`] records the whole step into your
//!   command encoder from views over your buffers ([`LossInputs`]: [`LogitsView`],
//!   [`TargetsView`], [`F32View`]), results into device buffers ([`LossBuffers`]), the
//!   gradient into its own buffer or over the logits ([`Gradient`]); nothing is read
//!   back until you read the [`Metrics`]. [`HeadInputs`] is the fused linear head,
//!   [`LossPart`] a batch in several buffers, [`VocabShards`] a vocabulary split over
//!   devices.
//! - **The log-prob primitive**: [`LogProbs`] (host form [`Context::logprobs`]) gives
//!   each row's `logp`, `H` and `lse` and takes your loss's upstream gradients back to
//!   the logits, for a loss this crate does not implement.
//! - **The f64 reference**: [`reference`](mod@reference) is the same math on the CPU,
//!   public, with the comparison rule the tests hold the kernels to
//!   ([`reference::compare`]).
//!
//! # Example
//!
//! A PPO-clip loss of two responses of two tokens over a vocabulary of four, and its
//! gradient, from host slices:
//!
//! ```
//! use wgpu_policy_loss::{Context, DType, HostBatch, HostLogits, LossConfig, PolicyLossMode};
//!
//! let ctx = Context::new()?;
//! let logits = [1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 0.0, -1.0, 0.5, 0.5, 0.5, 0.5];
//! let out = ctx.policy_loss(
//!     &LossConfig { mode: PolicyLossMode::PpoClip, ..LossConfig::default() },
//!     &HostBatch {
//!         logits: HostLogits::F32(&logits),
//!         vocab: 4,
//!         rows_per_seq: Some(2),        // two sequences of two tokens
//!         targets: &[3, 1, 0, 2],
//!         mask: &[1.0, 1.0, 1.0, 0.0],  // the last token is padding
//!         advantages: &[1.0, -0.5],     // one per sequence (or one per token)
//!         old_logprobs: None,           // on-policy
//!         ref_logprobs: None,
//!         temperatures: None,           // the sampler's τ per row
//!         kept: None,                   // the sampler's kept set per row
//!     },
//!     Some(DType::F32),                 // the gradient's dtype (None: forward only)
//! )?;
//! assert!(out.metrics.loss.is_finite());
//! assert_eq!(out.grad.unwrap().to_f32().len(), logits.len());
//! # Ok::<(), wgpu_policy_loss::Error>(())
//! ```
//!
//! # Features
//!
//! - `cli` (default): the `wgpu-policy-loss` binary (`eval`, `bench`, `check`, `info`,
//!   the demo) and what it needs (clap, safetensors, plotters); implies `tools`.
//! - `tools`: the benchmark harness, the cross-adapter checker and the demo, for the
//!   binary, the benchmarks and the browser page; hidden from these docs.
//!
//! A trainer that links the library alone takes `default-features = false`: the kernels,
//! the host and device APIs and the reference, with wgpu, bytemuck and half.

#![warn(missing_docs)]
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
pub use context::open::adapters;
pub use context::open::{
    available_paths, instance, OpenAdapters, Unavailable, FAIL_DEVICE_ENV, STRICT_ENV,
};
pub use context::{describe_info, Allocations, Context, Paths};
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
    pub use crate::shader::variants::shader_variants;
    pub use crate::shader::{GradOut, Kernel, PipelineKey, SamplerMap};
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
