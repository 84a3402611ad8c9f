//! The log-prob primitive as a differentiable Burn op
//! (docs/MATH.md#the-log-prob-primitive): `logp`, `H` and `lse` of each predicting row
//! under the sampler's distribution, whose backward takes Burn's upstream gradients of
//! all three and runs the fused vector-Jacobian product. Any loss written in Burn's
//! tensor ops on the three is then a loss of the fused kernels. It comes in two forms:
//! from logits, and from hidden states and the lm-head weight (the fused head, the
//! logits never held whole).

use burn::backend::Dispatch;
use burn::tensor::{Device, Int, Tensor};
use wgpu_policy_loss::{LogProbConfig, LogProbs};

use crate::api::{
    float_dtype, head_dims, ids, one_temperature, read_metrics, shape, to_f32, KeptTensors,
};
use crate::backend::{CallId, PolicyLossBackend, Positions, ProbOp, ProbResults, ProbRows};
use crate::device;
use crate::error::{Error, Result};

/// The primitive's optional inputs.
#[derive(Clone, Debug, Default)]
pub struct LogProbExtras {
    /// The sampler's temperature of each predicting row `[B, R]`, in place of the
    /// configuration's (which must then be 1).
    pub temperatures: Option<Tensor<2>>,
    /// The sampler's given kept sets (see [`KeptTensors`]): every row whose target is
    /// a token id needs it in its set (or an empty range).
    pub kept: Option<KeptTensors>,
    /// Which logits rows predict which ids (default [`Positions::Aligned`]).
    pub positions: Positions,
    /// [`logprobs_head`]: the logits rows made at once (`None`: as many as 256 MiB of
    /// f32 logits hold).
    pub chunk_rows: Option<u32>,
}

/// What [`logprobs`] and [`logprobs_head`] return: `[B, R]` f32 each, tracked: a loss
/// written on them reaches the logits (or hidden and the weight) through the
/// primitive's backward. `logprobs` is NaN on a row whose target lies outside the
/// vocabulary (padding), and no gradient may reach it there.
#[derive(Clone, Debug)]
pub struct LogProbsOutput {
    /// `logp` of each predicting row's target (NaN where the target is outside `[0, V)`).
    pub logprobs: Tensor<2>,
    /// The entropy `H` of each predicting row's distribution.
    pub entropy: Tensor<2>,
    /// The log-sum-exp `lse` of each predicting row (over its kept set, under its
    /// softcap and temperature).
    pub lse: Tensor<2>,
}

/// The log-prob primitive of logits `[B, S, V]` (f32, f16 or bf16) for ids `[B, S]`.
pub fn logprobs(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    extras: LogProbExtras,
    config: &LogProbConfig,
) -> Result<LogProbsOutput> {
    let [b, s, v] = logits.dims();
    float_dtype("logits", logits.dtype())?;
    let device = logits.device();
    let call = Call::new(("logits", &device), [b, s, v], targets, extras, config)?;
    let res = Dispatch::logprobs(logits.into_dispatch(), call.rows, call.upstream, call.op);
    finish(call.id, v, res)
}

/// The log-prob primitive from hidden states `[B, S, H]` and the lm-head weight
/// `[V, H]` (one dtype: f32, f16 or bf16; `nn.Linear(H, V)` without bias), the
/// `[B·S, V]` logits made a chunk of rows at a time. Otherwise as [`logprobs`]; a
/// loss on its outputs reaches both hidden and the weight.
pub fn logprobs_head(
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    extras: LogProbExtras,
    config: &LogProbConfig,
) -> Result<LogProbsOutput> {
    let ([b, s, _], v) = head_dims(&hidden, &weight)?;
    let device = hidden.device();
    let call = Call::new(("hidden", &device), [b, s, v], targets, extras, config)?;
    let (h, w) = (hidden.into_dispatch(), weight.into_dispatch());
    let res = Dispatch::logprobs_head(h, w, call.rows, call.upstream, call.op);
    finish(call.id, v, res)
}

/// A checked call's op and per-row inputs, and its forward's upstream `[3, B, R]`:
/// `a` 1 where the target is in the vocabulary, `b` 1, `c` 0 (the forward reads every
/// row: logp where the id is in the vocabulary, H and lse everywhere).
struct Call {
    op: ProbOp,
    rows: ProbRows<Dispatch>,
    upstream: burn::backend::tensor::FloatTensor<Dispatch>,
    id: CallId,
}

impl Call {
    fn new(
        (arg, device): (&'static str, &Device),
        [b, s, v]: [usize; 3],
        targets: Tensor<2, Int>,
        extras: LogProbExtras,
        config: &LogProbConfig,
    ) -> Result<Self> {
        let (ctx, pool) = device::context_of(arg, device)?;
        pool.logprobs(&ctx, config)?;
        one_temperature(extras.temperatures.is_some(), config.temperature)?;
        let (p, r) = (
            extras.positions.prompt_len(),
            extras.positions.rows_per_seq(s),
        );
        if b == 0 || r == 0 {
            let why = format!("is [{b}, {s}, ·]: no row predicts an id");
            return Err(Error::arg(arg, why));
        }
        shape(
            "targets",
            &targets.dims(),
            &[b, s],
            &targets.device(),
            device,
        )?;
        let ids = ids(targets)?;
        let predicted = ids.clone().narrow(1, p, r);
        let valid = predicted
            .clone()
            .greater_equal_elem(0)
            .bool_and(predicted.lower_elem(v as i64));
        let a = valid.float();
        let upstream = Tensor::stack::<3>(vec![a.clone(), a.ones_like(), a.zeros_like()], 0);
        let temps = match &extras.temperatures {
            Some(t) => {
                shape("temperatures", &t.dims(), &[b, r], &t.device(), device)?;
                to_f32("temperatures", t.clone())?
            }
            None => a,
        };
        let op = ProbOp {
            config: *config,
            positions: extras.positions,
            has_temps: extras.temperatures.is_some(),
            has_kept: extras.kept.is_some(),
            chunk_rows: extras.chunk_rows,
            call: CallId::next(),
        };
        let [keep_offsets, keep_ids] = KeptTensors::checked(&extras.kept, b * r, device, &ids)?;
        let rows = ProbRows {
            keep_offsets: keep_offsets.into_dispatch(),
            keep_ids: keep_ids.into_dispatch(),
            targets: ids.into_dispatch(),
            temperatures: temps.into_dispatch(),
        };
        Ok(Call {
            id: op.call,
            op,
            rows,
            upstream: upstream.into_dispatch(),
        })
    }
}

/// The results of call `id` checked (bad rows, bad ids: an error naming them), and
/// the statistics split into the three tensors.
fn finish(id: CallId, v: usize, res: ProbResults<Dispatch>) -> Result<LogProbsOutput> {
    LogProbs::check(&read_metrics(id, res.metrics)?, v as u32)?;
    let stats: Tensor<3> = Tensor::from_dispatch(res.stats);
    let take = |k: usize| stats.clone().narrow(0, k, 1).squeeze_dim::<2>(0);
    Ok(LogProbsOutput {
        logprobs: take(0),
        entropy: take(1),
        lse: take(2),
    })
}
