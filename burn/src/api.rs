//! The tensor functions: check the arguments (errors name them), bring the per-token
//! tensors to f32 and the ids to 32 bits, call the op, read the metrics back and check
//! them (bad ids, bad per-row inputs: errors naming the tensor and the first bad row).

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, FloatDType, Int, IntDType, Tensor};
use wgpu_policy_loss::{AdvantageEstimator, LossConfig, Metrics};

use crate::backend::{AdvantagesOp, CallId, LossOp, PolicyLossBackend, Positions, RowInputs};
use crate::device;
use crate::error::{Error, Result};

/// Advantages, one per sequence (`[B]`, broadcast over its tokens) or one per token
/// (`[B, R]`). A `Tensor<1>` or `Tensor<2>` converts.
#[derive(Clone, Debug)]
pub enum Advantages {
    /// `[B]`, one per sequence: every predicting row of sequence `b` takes `A_b`.
    PerSequence(Tensor<1>),
    /// `[B, R]`, one per predicting row.
    PerToken(Tensor<2>),
}

impl From<Tensor<1>> for Advantages {
    fn from(t: Tensor<1>) -> Self {
        Advantages::PerSequence(t)
    }
}

impl From<Tensor<2>> for Advantages {
    fn from(t: Tensor<2>) -> Self {
        Advantages::PerToken(t)
    }
}

/// The sampler's given kept sets as CSR (vLLM's `SamplingMask`): predicting row `i`
/// (of the `B·R`, sequence by sequence) keeps the token ids `ids[offsets[i] ..
/// offsets[i + 1]]`, any order, none twice; an empty range keeps every token. The
/// tensors are the caller's word (the kernels never read out of bounds); a row whose
/// target is not among its ids is bad input, named `targets`.
#[derive(Clone, Debug)]
pub struct KeptTensors {
    /// `[B·R + 1]` offsets into `ids`: from 0, never decreasing, ending at `nnz`.
    pub offsets: Tensor<1, Int>,
    /// `[nnz]` token ids of every row's set, in `[0, V)`.
    pub ids: Tensor<1, Int>,
}

impl KeptTensors {
    /// The two tensors checked against `rows` predicting rows on `device`, as 32-bit
    /// ids; `like` (any 32-bit id tensor) twice where there are none.
    pub(crate) fn checked(
        kept: &Option<KeptTensors>,
        rows: usize,
        device: &Device,
        like: &Tensor<2, Int>,
    ) -> Result<[Tensor<1, Int>; 2]> {
        let Some(k) = kept else {
            let flat = like.clone().flatten::<1>(0, 1);
            return Ok([flat.clone(), flat]);
        };
        shape(
            "keep_offsets",
            &k.offsets.dims(),
            &[rows + 1],
            &k.offsets.device(),
            device,
        )?;
        let n = k.ids.dims()[0];
        shape("keep_ids", &k.ids.dims(), &[n], &k.ids.device(), device)?;
        let as_i32 = |t: Tensor<1, Int>| match t.dtype() {
            DType::I32 | DType::U32 => t,
            _ => t.clamp(-1, i32::MAX).cast(IntDType::I32),
        };
        Ok([as_i32(k.offsets.clone()), as_i32(k.ids.clone())])
    }
}

/// The optional inputs of a call, and which logits rows predict which ids.
#[derive(Clone, Debug, Default)]
pub struct LossExtras {
    /// The behaviour policy's log-probs `[B, R]` (PPO/GRPO's ratio); without them
    /// the ratio is 1 (on-policy).
    pub old_logprobs: Option<Tensor<2>>,
    /// The reference policy's log-probs `[B, R]`, for the KL term.
    pub ref_logprobs: Option<Tensor<2>>,
    /// The sampler's log-probs `[B, R]` (vLLM's, SGLang's), for the rollout
    /// correction.
    pub rollout_logprobs: Option<Tensor<2>>,
    /// The sampler's temperature of each predicting row `[B, R]`
    /// (docs/MATH.md#the-samplers-distribution), in place of the configuration's
    /// `temperature` (which must then be 1). The softcap is the configuration's
    /// `logit_softcap`.
    pub temperatures: Option<Tensor<2>>,
    /// The sampler's given kept set of each predicting row
    /// (docs/MATH.md#given-kept-sets): the loss over the kept tokens alone.
    pub kept: Option<KeptTensors>,
    /// Which logits rows predict which ids (default [`Positions::Aligned`]: row `s`
    /// predicts id `s`).
    pub positions: Positions,
    /// [`policy_loss_head`]: the logits rows made at once (`None`: as many as 256 MiB
    /// of f32 logits hold).
    pub chunk_rows: Option<u32>,
}

impl LossExtras {
    /// With the behaviour policy's log-probs `[B, R]` ([`LossExtras::old_logprobs`]).
    pub fn with_old_logprobs(mut self, t: Tensor<2>) -> Self {
        self.old_logprobs = Some(t);
        self
    }

    /// With the reference policy's log-probs `[B, R]` ([`LossExtras::ref_logprobs`]).
    pub fn with_ref_logprobs(mut self, t: Tensor<2>) -> Self {
        self.ref_logprobs = Some(t);
        self
    }

    /// With the sampler's log-probs `[B, R]` ([`LossExtras::rollout_logprobs`]).
    pub fn with_rollout_logprobs(mut self, t: Tensor<2>) -> Self {
        self.rollout_logprobs = Some(t);
        self
    }

    /// With a temperature per predicting row `[B, R]` ([`LossExtras::temperatures`]).
    pub fn with_temperatures(mut self, t: Tensor<2>) -> Self {
        self.temperatures = Some(t);
        self
    }

    /// The sampler's kept sets: `offsets` `[B·R + 1]`, `ids` `[nnz]`.
    pub fn with_kept(mut self, offsets: Tensor<1, Int>, ids: Tensor<1, Int>) -> Self {
        self.kept = Some(KeptTensors { offsets, ids });
        self
    }

    /// With `positions` ([`LossExtras::positions`]).
    pub fn with_positions(mut self, positions: Positions) -> Self {
        self.positions = positions;
        self
    }

    /// The seed's shift: logits at position s predict id s + 1.
    pub fn shifted(self) -> Self {
        self.with_positions(Positions::Shifted)
    }

    /// The response after a prompt of `prompt_len` tokens.
    pub fn response(self, prompt_len: usize) -> Self {
        self.with_positions(Positions::Response { prompt_len })
    }

    /// With `rows` logits rows made at once by [`policy_loss_head`].
    pub fn with_chunk_rows(mut self, rows: u32) -> Self {
        self.chunk_rows = Some(rows);
        self
    }
}

/// What a call returns. `loss` carries the backward; the other tensors are constants.
#[derive(Clone, Debug)]
pub struct PolicyLossOutput {
    /// The aggregated loss, `[1]`, f32.
    pub loss: Tensor<1>,
    /// log π(y) of each predicted token, `[B, R]` (≤ 0).
    pub logprobs: Tensor<2>,
    /// The entropy of each predicting row, `[B, R]`.
    pub entropy: Tensor<2>,
    /// log Σ_v e^{x_v/τ} of each predicting row, `[B, R]` (any value on masked-out rows).
    pub lse: Tensor<2>,
    /// The loss's metrics (clip fractions, KL, entropy mean, …), read back and checked.
    pub metrics: Metrics,
}

/// The policy loss of logits `[B, S, V]` (f32, f16 or bf16) for ids `[B, S]`, with the
/// mask `[B, R]`, advantages `[B]` or `[B, R]`, and `extras`; `R` is the number of
/// predicting rows per sequence ([`Positions`]). `loss.backward()` reaches the logits
/// through the op's backward.
///
/// It reads the metrics back (one small readback) to return an `Err` for bad ids or
/// bad per-row inputs, naming the tensor and the first bad row.
pub fn policy_loss(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    advantages: impl Into<Advantages>,
    extras: LossExtras,
    config: &LossConfig,
) -> Result<PolicyLossOutput> {
    let [b, s, v] = logits.dims();
    float_dtype("logits", logits.dtype())?;
    let call = Call::new(
        ("logits", &logits.device()),
        [b, s],
        targets,
        mask,
        advantages.into(),
        extras,
        config,
    )?;
    let id = call.op.call;
    let r = Dispatch::policy_loss(logits.into_dispatch(), call.rows, call.op);
    finish(id, v, [r.loss, r.logprobs, r.entropy, r.lse, r.metrics])
}

/// The policy loss straight from hidden states `[B, S, H]` and the lm-head weight
/// `[V, H]` (both f32, f16 or bf16, one dtype; `nn.Linear(H, V)` without bias), the
/// `[B·S, V]` logits never held whole. Otherwise as [`policy_loss`]; `loss.backward()`
/// reaches both hidden and the weight.
#[allow(clippy::too_many_arguments)]
pub fn policy_loss_head(
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    advantages: impl Into<Advantages>,
    extras: LossExtras,
    config: &LossConfig,
) -> Result<PolicyLossOutput> {
    let ([b, s, _], v) = head_dims(&hidden, &weight)?;
    let call = Call::new(
        ("hidden", &hidden.device()),
        [b, s],
        targets,
        mask,
        advantages.into(),
        extras,
        config,
    )?;
    let (h, w) = (hidden.into_dispatch(), weight.into_dispatch());
    let id = call.op.call;
    let r = Dispatch::policy_loss_head(h, w, call.rows, call.op);
    finish(id, v, [r.loss, r.logprobs, r.entropy, r.lse, r.metrics])
}

/// The configuration's temperature where per-token ones are given: it must be 1.
pub(crate) fn one_temperature(per_token: bool, temperature: f32) -> Result<()> {
    if per_token && temperature != 1.0 {
        let why = format!("must be 1 when per-token temperatures are given, got {temperature}");
        return Err(Error::arg("temperature", why));
    }
    Ok(())
}

/// Hidden `[B, S, H]` and the weight `[V, H]` checked against each other: `[B, S, H]`
/// and `V`.
pub(crate) fn head_dims(hidden: &Tensor<3>, weight: &Tensor<2>) -> Result<([usize; 3], usize)> {
    let [b, s, h] = hidden.dims();
    let [v, wh] = weight.dims();
    float_dtype("hidden", hidden.dtype())?;
    if weight.dtype() != hidden.dtype() {
        let why = format!(
            "is {:?}, hidden is {:?}: both need one dtype",
            weight.dtype(),
            hidden.dtype()
        );
        return Err(Error::arg("weight", why));
    }
    if wh != h || v == 0 {
        return Err(Error::arg(
            "weight",
            format!("is [{v}, {wh}]: the lm-head is [V ≥ 1, H = {h}]"),
        ));
    }
    same_device("weight", &hidden.device(), &weight.device())?;
    Ok(([b, s, h], v))
}

/// Advantages `[N]` from rewards `[N]`, one per sequence, in groups of `group_size`
/// consecutive sequences answering one prompt (GRPO, RLOO, …: the estimators of
/// docs/MATH.md#advantages-from-rewards), on the device. A constant of the loss: no
/// gradient flows to the rewards.
pub fn advantages(
    rewards: Tensor<1>,
    estimator: AdvantageEstimator,
    group_size: usize,
) -> Result<Tensor<1>> {
    let device = rewards.device();
    device::context_of("rewards", &device)?;
    let group =
        u32::try_from(group_size).map_err(|_| Error::arg("group_size", "is above u32::MAX"))?;
    wgpu_policy_loss::check_groups(rewards.dims()[0], group)?;
    let rewards = to_f32("rewards", rewards)?;
    let op = AdvantagesOp {
        estimator,
        group_size,
    };
    Ok(Tensor::from_dispatch(Dispatch::advantages(
        rewards.into_dispatch(),
        op,
    )))
}

/// The checked, converted per-row tensors of a call, and its op.
struct Call {
    rows: RowInputs<Dispatch>,
    op: LossOp,
}

impl Advantages {
    /// The advantages checked against `[B]` or `[B, R]` on `device`, as `[B, 1]` or
    /// `[B, R]`, and whether they are per token.
    fn checked(self, [b, r]: [usize; 2], device: &Device) -> Result<(Tensor<2>, bool)> {
        Ok(match self {
            Advantages::PerSequence(a) => {
                shape("advantages", &a.dims(), &[b], &a.device(), device)?;
                (a.unsqueeze_dim(1), false)
            }
            Advantages::PerToken(a) => {
                shape("advantages", &a.dims(), &[b, r], &a.device(), device)?;
                (a, true)
            }
        })
    }
}

impl Call {
    /// The call on `device`, where the tensor `arg` (logits, or hidden) lives.
    fn new(
        (arg, device): (&'static str, &Device),
        [b, s]: [usize; 2],
        targets: Tensor<2, Int>,
        mask: Tensor<2>,
        advantages: Advantages,
        extras: LossExtras,
        config: &LossConfig,
    ) -> Result<Call> {
        let (ctx, pool) = device::context_of(arg, device)?;
        pool.loss(&ctx, config)?;
        // here, not where the op executes: a missing input is the caller's error at once
        config.check_optional_inputs(
            extras.ref_logprobs.is_some(),
            extras.rollout_logprobs.is_some(),
        )?;
        one_temperature(extras.temperatures.is_some(), config.temperature)?;
        let r = check_positions(extras.positions, b, s)?;
        shape(
            "targets",
            &targets.dims(),
            &[b, s],
            &targets.device(),
            device,
        )?;
        shape("mask", &mask.dims(), &[b, r], &mask.device(), device)?;
        let (advantages, per_token) = advantages.checked([b, r], device)?;
        let mask = to_f32("mask", mask)?;
        let optional = |arg, t: &Option<Tensor<2>>| -> Result<Tensor<2>> {
            match t {
                Some(t) => {
                    shape(arg, &t.dims(), &[b, r], &t.device(), device)?;
                    to_f32(arg, t.clone())
                }
                None => Ok(mask.clone()),
            }
        };
        let extra = [
            optional("old_logprobs", &extras.old_logprobs)?,
            optional("ref_logprobs", &extras.ref_logprobs)?,
            optional("rollout_logprobs", &extras.rollout_logprobs)?,
            optional("temperatures", &extras.temperatures)?,
        ];
        let op = LossOp {
            config: *config,
            positions: extras.positions,
            per_token_advantages: per_token,
            has_old: extras.old_logprobs.is_some(),
            has_ref: extras.ref_logprobs.is_some(),
            has_rollout: extras.rollout_logprobs.is_some(),
            has_temps: extras.temperatures.is_some(),
            has_kept: extras.kept.is_some(),
            want_grad: true,
            chunk_rows: extras.chunk_rows,
            call: CallId::next(),
        };
        let advantages = to_f32("advantages", advantages)?;
        let [old_logprobs, ref_logprobs, rollout_logprobs, temperatures] =
            extra.map(Tensor::into_dispatch);
        let targets = ids(targets)?;
        let [keep_offsets, keep_ids] = KeptTensors::checked(&extras.kept, b * r, device, &targets)?;
        let rows = RowInputs {
            keep_offsets: keep_offsets.into_dispatch(),
            keep_ids: keep_ids.into_dispatch(),
            targets: targets.into_dispatch(),
            mask: mask.into_dispatch(),
            advantages: advantages.into_dispatch(),
            old_logprobs,
            ref_logprobs,
            rollout_logprobs,
            temperatures,
        };
        Ok(Call { rows, op })
    }
}

/// `R`, the predicting rows per sequence, or an error naming `positions`.
fn check_positions(p: Positions, b: usize, s: usize) -> Result<usize> {
    if b == 0 || s == 0 {
        return Err(Error::arg(
            "logits",
            format!("is [{b}, {s}, ·]: needs B ≥ 1 and S ≥ 1"),
        ));
    }
    if let Positions::Response { prompt_len: 0 } = p {
        return Err(Error::arg(
            "positions",
            "Response { prompt_len: 0 } has no position before the first id: use Positions::Aligned",
        ));
    }
    let r = p.rows_per_seq(s);
    if r == 0 {
        let why = format!("{p:?} leaves no predicting row in sequences of S = {s} positions");
        return Err(Error::arg("positions", why));
    }
    Ok(r)
}

pub(crate) fn shape(
    arg: &'static str,
    dims: &[usize],
    want: &[usize],
    on: &Device,
    device: &Device,
) -> Result<()> {
    if dims != want {
        return Err(Error::arg(
            arg,
            format!("has shape {dims:?}, expected {want:?}"),
        ));
    }
    same_device(arg, device, on)
}

fn same_device(arg: &'static str, device: &Device, on: &Device) -> Result<()> {
    if on != device {
        return Err(Error::arg(
            arg,
            format!("is on {on:?}, the logits on {device:?}"),
        ));
    }
    Ok(())
}

pub(crate) fn float_dtype(arg: &'static str, d: DType) -> Result<()> {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(Error::arg(arg, format!("is {other:?}: f32, f16 or bf16"))),
    }
}

/// A per-token tensor in f32 (an O(rows) cast where it is f16 or bf16).
pub(crate) fn to_f32<const D: usize>(arg: &'static str, t: Tensor<D>) -> Result<Tensor<D>> {
    float_dtype(arg, t.dtype())?;
    Ok(match t.dtype() {
        DType::F32 => t,
        _ => t.cast(FloatDType::F32),
    })
}

/// The ids as 32 bits the kernels read as u32. Wider ids are clamped into
/// `[-1, i32::MAX]` first: one that does not fit stays outside every vocabulary (an
/// `Err` naming its row), never wrapping onto a valid id.
pub(crate) fn ids(t: Tensor<2, Int>) -> Result<Tensor<2, Int>> {
    Ok(match t.dtype() {
        DType::I32 | DType::U32 => t,
        _ => t.clamp(-1, i32::MAX).cast(IntDType::I32),
    })
}

/// Wraps the results and checks the metrics.
/// A call's metrics, read back, or the error its execution met.
pub(crate) fn read_metrics(
    call: CallId,
    metrics: burn::backend::DispatchTensor,
) -> Result<Metrics> {
    let raw: Tensor<1> = Tensor::from_dispatch(metrics);
    let values = raw
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Burn(format!("the metrics did not read back: {e:?}")))?;
    if let Some(e) = device::take_error(call) {
        return Err(e.into());
    }
    Ok(Metrics::from_slice(&values))
}

fn finish(
    call: CallId,
    vocab: usize,
    [loss, logp, ent, lse, metrics]: [burn::backend::DispatchTensor; 5],
) -> Result<PolicyLossOutput> {
    let metrics = read_metrics(call, metrics)?;
    metrics.check(vocab as u32)?;
    Ok(PolicyLossOutput {
        loss: Tensor::from_dispatch(loss),
        logprobs: Tensor::from_dispatch(logp),
        entropy: Tensor::from_dispatch(ent),
        lse: Tensor::from_dispatch(lse),
        metrics,
    })
}
