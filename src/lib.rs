//! Reinforcement-learning policy loss of a language model, computed straight from its
//! logits in WGSL compute kernels on any GPU wgpu reaches (Vulkan, Metal, DX12, GL).
//!
//! The math is `SPEC.md`'s. Kernels read the caller's device buffers through views
//! ([`LogitsView`], [`TargetsView`]), record into the caller's command encoder and
//! leave their results on the device; [`Context::row_stats`] and friends wrap that for
//! host slices. [`reference`] is the f64 CPU reference everything is tested against.

// the benchmarks (and what only they use) are native only
#![cfg_attr(target_arch = "wasm32", allow(dead_code))]

mod advantages;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod check;
mod config;
mod context;
mod demo;
mod error;
mod host;
mod kernels;
mod loss;
pub mod reference;
mod shards;
mod view;

pub use advantages::AdvantageEstimator;
pub use config::{
    KlEstimator, LossAggMode, LossConfig, PolicyLossMode, RolloutCorrection, RolloutLevel,
    RolloutMode, TrlLossType,
};
#[cfg(not(target_arch = "wasm32"))]
pub use context::adapters;
pub use context::{
    available_paths, describe_info, instance, Allocations, Context, OpenAdapters, Paths,
    Unavailable, FAIL_DEVICE_ENV, STRICT_ENV,
};
pub use demo::{Demo, DemoConfig};
pub use error::{Error, Result, RowInput};
pub use host::{check_targets, HostBatch, HostGrad, HostLogits, HostLoss, HostPart, RowStatsHost};
pub use kernels::row_stats::{RowStatsBuffers, RowStatsOutputs};
pub use kernels::{shader_variants, GradOut, Kernel, PipelineKey};
pub use loss::{
    Advantages, GradView, Gradient, InvalidInput, LossBuffers, LossInputs, LossOutputs, LossPart,
    Metrics, PolicyLoss,
};
pub use shards::{VocabShards, PARTIAL_BYTES, PARTIAL_FLOATS};
pub use view::{DType, F32View, LogitsView, RowLayout, TargetsView};

/// Re-exported so callers use the same wgpu (and half) versions as this crate.
pub use half;
pub use wgpu;

/// The README's examples run as doctests, so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
