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
//! # The functions
//!
//! - [`policy_loss`]: the loss of logits `[B, S, V]` (f32, f16 or bf16) for ids `[B, S]`,
//!   with a mask `[B, R]`, advantages `[B]` or `[B, R]` ([`Advantages`]) and the optional
//!   inputs of [`LossExtras`] (old, reference and sampler log-probs, per-row
//!   temperatures, kept sets, [`Positions`]: which logits rows predict which ids, `R` of
//!   them per sequence). It returns a [`PolicyLossOutput`]: the loss `[1]`, which
//!   carries the backward, and per-row log-probs, entropies and `lse` with the checked
//!   [`Metrics`].
//! - [`policy_loss_head`]: the same from hidden states `[B, S, H]` and the lm-head
//!   weight `[V, H]`, the logits made a chunk of rows at a time and never held whole;
//!   the backward reaches both.
//! - [`logprobs`] and [`logprobs_head`]: the log-prob primitive, each predicting row's
//!   `logp`, `H` and `lse` under the sampler's distribution ([`LogProbConfig`],
//!   [`LogProbExtras`]), tracked: any loss written in Burn's tensor ops on them
//!   backpropagates through the fused vector-Jacobian product.
//! - [`advantages`]: advantages `[N]` from rewards `[N]` in groups
//!   ([`AdvantageEstimator`]), a constant of the loss.
//!
//! Every function checks its arguments first and returns an [`Error`] naming the tensor
//! (or configuration field) and, for a per-row value, the first bad row; the loss
//! functions read the metrics back (one small readback) to report bad ids and inputs.
//! The configuration types are the library's, re-exported. What each call computes is
//! the repository's `docs/MATH.md`.
//!
//! # The device
//!
//! The op runs on Burn's wgpu backend, with or without `burn-fusion` (this crate's
//! `fusion` feature), on a device registered with the library's context:
//!
//! - [`init`]: Burn's default wgpu device, brought up and registered (call
//!   `.autodiff()` on it for training); [`init_with`] takes Burn's `WgpuOptions`
//!   (adapter kind, graphics API, memory).
//! - [`register`]: a device the caller brought up with Burn's `init_with_setup`, from
//!   the handles it returned.
//! - [`from_adapter`]: a device opened on any wgpu adapter (say, one that
//!   `wgpu_policy_loss::adapters()` lists), registered with both Burn and the loss.
//!
//! A tensor on any other device is an `Err` naming it. The logits (hidden states,
//! weight) are read in Burn's buffers and the logits' gradient is written into a tensor
//! Burn allocated: no copy of anything `[T, V]`. The per-token tensors are copied
//! (O(rows) bytes) into the library's own buffers.
//!
//! [`PolicyLossBackend`] is the op as Burn's backend extension (with the `*Op`,
//! `*Results` and row-input types its methods take); the functions above are the way
//! to call it.

#![warn(missing_docs)]

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
