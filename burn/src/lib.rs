//! The [`wgpu-policy-loss`](wgpu_policy_loss) kernels as a Burn op: the
//! reinforcement-learning policy loss of a language model straight from its logits
//! (or from hidden states and the lm-head weight), with a backward that Burn's
//! autodiff calls.
//!
//! ```no_run
//! use burn::tensor::{Int, Tensor};
//! use wgpu_policy_loss_burn::{policy_loss, LossConfig, LossExtras};
//! # fn f() -> wgpu_policy_loss_burn::Result<()> {
//! let device = wgpu_policy_loss_burn::init()?.autodiff();
//! # let (logits, targets, mask, advantages): (Tensor<3>, Tensor<2, Int>, Tensor<2>, Tensor<1>) = todo!();
//! let out = policy_loss(logits, targets, mask, advantages, LossExtras::default(), &LossConfig::default())?;
//! let grads = out.loss.backward();
//! # Ok(()) }
//! ```
//!
//! The op runs on Burn's wgpu backend, with or without `burn-fusion` (this crate's
//! `fusion` feature), on a device registered with [`init`], [`init_with`],
//! [`register`] or [`from_adapter`]; a tensor anywhere else is an `Err` naming it. The
//! logits (hidden states, weight) are read in Burn's buffers and the logits' gradient
//! is written into a tensor Burn allocated: no copy of anything `[T, V]`. The per-token
//! tensors are copied (O(rows) bytes) into the library's own buffers.

mod api;
mod autodiff;
mod backend;
mod borrow;
mod cube;
mod device;
mod error;
mod head;
mod logprobs;
mod meta;
mod pool;
mod primitive;

pub use api::{
    advantages, policy_loss, policy_loss_head, Advantages, KeptTensors, LossExtras,
    PolicyLossOutput,
};
pub use backend::{
    AdvantagesOp, CallId, HeadResults, LossOp, LossResults, PolicyLossBackend, Positions,
    ProbHeadGrads, ProbOp, ProbResults, ProbRows, RowInputs,
};
pub use device::{from_adapter, init, init_with, register};
pub use error::{Error, Result};
pub use logprobs::{logprobs, logprobs_head, LogProbExtras, LogProbsOutput};
pub use wgpu_policy_loss::{
    AdvantageEstimator, ImportanceSamplingLevel, KlEstimator, LogProbConfig, LossAggMode,
    LossConfig, Metrics, PolicyLossMode, RolloutCorrection, RolloutLevel, RolloutMode, TrlLossType,
};
