//! What a call reads and where its results go: the caller's device views.

use crate::context::Context;
use crate::kernels::prepare::RowInputs;
use crate::kernels::reduce::METRICS;
use crate::view::{DType, F32View, KeptView, LogitsView, RowLayout, TargetsView};

/// Advantages, per sequence (`[B]`, broadcast over its rows) or per row. A NaN or
/// ±inf advantage on a masked-in row is bad input (docs/MATH.md#bad-input).
#[derive(Clone, Copy, Debug)]
pub enum Advantages<'a> {
    /// One f32 per sequence (sequences as the logits view groups the rows), the value
    /// of every row of it; what GRPO and the other estimators of
    /// [`AdvantageEstimator`](crate::AdvantageEstimator) give.
    PerSequence(F32View<'a>),
    /// One f32 per row.
    PerToken(F32View<'a>),
}

/// The device inputs of one call. Rows are grouped into sequences by the logits view
/// (`rows_per_seq`): one sequence for a plain `[T, V]` view.
#[derive(Clone, Copy, Debug)]
pub struct LossInputs<'a> {
    /// The logits `[rows, V]`, read in place; row `r` scores `targets[r]`
    /// (docs/MATH.md#inputs-and-layout).
    pub logits: LogitsView<'a>,
    /// The sampled id of each row, read on masked-in rows only: there an id outside
    /// `[0, V)` is bad input (its row NaN, counted in the metrics, named by
    /// [`Metrics::check`](crate::Metrics::check)); elsewhere anything goes.
    pub targets: TargetsView<'a>,
    /// One f32 per row: 0 outside the response, 1 inside (other values ≥ 0 weight
    /// linearly). A negative, NaN or ±inf value is bad input: its row's loss and
    /// gradient are NaN and [`Metrics::check`](crate::Metrics::check) names it.
    pub mask: F32View<'a>,
    /// The advantages `A`, per sequence or per row.
    pub advantages: Advantages<'a>,
    /// Behaviour-policy log-probs; without them `ppo_clip` and `gspo` are on-policy.
    pub old_logprobs: Option<F32View<'a>>,
    /// Reference-policy log-probs for the KL term (required when `kl_coef != 0`).
    pub ref_logprobs: Option<F32View<'a>>,
    /// The sampler's temperature of each row (docs/MATH.md#the-samplers-distribution), in
    /// place of the configuration's one `temperature` (which must then be 1). A value
    /// that is not a positive number on a masked-in row is bad input: the row's loss
    /// and gradient are NaN and [`Metrics::check`](crate::Metrics::check) names it.
    pub temperatures: Option<F32View<'a>>,
    /// The sampler's given kept set of each row (docs/MATH.md#given-kept-sets): the
    /// loss and its gradient are taken over the kept tokens alone. A masked-in row
    /// whose target is not kept is bad input ([`crate::RowInput::Targets`]).
    pub kept: Option<KeptView<'a>>,
}

impl<'a> LossInputs<'a> {
    /// On-policy inputs without a reference policy; add those with
    /// [`LossInputs::with_old_logprobs`] and [`LossInputs::with_ref_logprobs`].
    pub fn new(
        logits: LogitsView<'a>,
        targets: TargetsView<'a>,
        mask: F32View<'a>,
        advantages: Advantages<'a>,
    ) -> Self {
        LossInputs {
            logits,
            targets,
            mask,
            advantages,
            old_logprobs: None,
            ref_logprobs: None,
            temperatures: None,
            kept: None,
        }
    }

    /// The behaviour policy's log-probs (one per row): `ppo_clip` and `gspo` off-policy.
    pub fn with_old_logprobs(mut self, v: F32View<'a>) -> Self {
        self.old_logprobs = Some(v);
        self
    }

    /// The reference policy's log-probs (one per row), for the KL term.
    pub fn with_ref_logprobs(mut self, v: F32View<'a>) -> Self {
        self.ref_logprobs = Some(v);
        self
    }

    /// The sampler's temperature of each row, in place of the scalar one.
    pub fn with_temperatures(mut self, v: F32View<'a>) -> Self {
        self.temperatures = Some(v);
        self
    }

    /// The sampler's given kept set of each row.
    pub fn with_kept(mut self, v: KeptView<'a>) -> Self {
        self.kept = Some(v);
        self
    }

    /// The per-row inputs `prepare` gathers.
    pub(super) fn row_inputs(&self) -> RowInputs<'a> {
        let (advantages, per_token_advantages) = match self.advantages {
            Advantages::PerSequence(v) => (v, false),
            Advantages::PerToken(v) => (v, true),
        };
        RowInputs {
            mask: self.mask,
            advantages,
            per_token_advantages,
            old_logp: self.old_logprobs,
            ref_logp: self.ref_logprobs,
            rollout_logp: None,
            temperatures: self.temperatures,
            kept: self.kept,
            primitive: false,
        }
    }
}

/// One part of a call of [`crate::PolicyLoss::record_parts`]: its inputs, where its gradient
/// goes, and the sampler's log-probs where the loss corrects for the rollout
/// ([`LossConfig::rollout_correction`](crate::LossConfig)). A pair `(inputs, gradient)`
/// is a part without them.
#[derive(Clone, Copy, Debug)]
pub struct LossPart<'a> {
    /// The part's inputs: whole sequences, numbered after the previous parts' rows.
    pub inputs: LossInputs<'a>,
    /// Where this part's gradient goes (its own buffer, its logits, or nowhere).
    pub gradient: Gradient<'a>,
    /// The inference engine's log-probs of the sampled tokens, one per row (vLLM's,
    /// SGLang's); only read where the mask is > 0.
    pub rollout_logprobs: Option<F32View<'a>>,
}

impl<'a> LossPart<'a> {
    /// A part without the sampler's log-probs.
    pub fn new(inputs: LossInputs<'a>, gradient: Gradient<'a>) -> Self {
        LossPart {
            inputs,
            gradient,
            rollout_logprobs: None,
        }
    }

    /// The sampler's log-probs, for the rollout correction.
    pub fn with_rollout_logprobs(mut self, v: F32View<'a>) -> Self {
        self.rollout_logprobs = Some(v);
        self
    }
}

impl<'a> From<(LossInputs<'a>, Gradient<'a>)> for LossPart<'a> {
    fn from((inputs, gradient): (LossInputs<'a>, Gradient<'a>)) -> Self {
        LossPart::new(inputs, gradient)
    }
}

/// A gradient buffer: rows of `vocab` values in `dtype`, dense unless strided.
#[derive(Clone, Copy, Debug)]
pub struct GradView<'a> {
    /// The caller's buffer; needs `BufferUsages::STORAGE`, and must not be a buffer the
    /// call reads.
    pub buffer: &'a wgpu::Buffer,
    /// The gradient's dtype, any of the three whatever the logits' (rounded once from
    /// f32).
    pub dtype: DType,
    /// Where each row's `vocab` values go, in elements of `dtype`; rows must not overlap.
    pub layout: RowLayout,
}

impl<'a> GradView<'a> {
    /// Dense `[rows, vocab]` from the start of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer, dtype: DType, vocab: u32) -> Self {
        GradView {
            buffer,
            dtype,
            layout: RowLayout {
                offset: 0,
                row_stride: vocab as u64,
                rows_per_seq: u32::MAX,
                seq_stride: 0,
            },
        }
    }

    /// The same layout as `logits` (rows, strides, sequences) in another buffer.
    pub fn like(buffer: &'a wgpu::Buffer, dtype: DType, logits: &LogitsView<'_>) -> Self {
        GradView {
            buffer,
            dtype,
            layout: logits.layout,
        }
    }
}

/// Where the gradient with respect to the logits goes.
#[derive(Clone, Copy, Debug)]
pub enum Gradient<'a> {
    /// Forward only: loss, log-probs, entropies, metrics.
    None,
    /// Into a separate buffer (f32, f16 or bf16).
    Into(GradView<'a>),
    /// Over the logits themselves, in their dtype (a training step does not need the
    /// logits after the backward). Only the view's rows are written.
    InPlace,
}

/// Where the results go. `metrics` receives [`Metrics::LEN`](crate::Metrics::LEN) f32 values, the loss first
/// (see [`Metrics::from_slice`](crate::Metrics::from_slice)); reading it back and calling [`Metrics::check`](crate::Metrics::check) is the
/// validation of the token ids and of the other per-row inputs (docs/MATH.md#bad-input).
/// `logprobs`, `entropy` and `lse` (log Σ_v e^{x_v/τ}) take one f32 per row of the
/// call, every part's in order; a row outside the loss (mask 0) gets an unspecified
/// value.
#[derive(Clone, Copy, Debug)]
pub struct LossOutputs<'a> {
    /// [`Metrics::LEN`](crate::Metrics::LEN) f32: the loss, then the metrics.
    pub metrics: F32View<'a>,
    /// `logp_r` of each row's target; `None`: not written.
    pub logprobs: Option<F32View<'a>>,
    /// The entropy `H_r` of each row; `None`: not written.
    pub entropy: Option<F32View<'a>>,
    /// The log-sum-exp `lse_r` of each row; `None`: not written.
    pub lse: Option<F32View<'a>>,
}

impl<'a> LossOutputs<'a> {
    /// The metrics alone; add the per-row outputs wanted with the `with_` methods.
    pub fn new(metrics: F32View<'a>) -> Self {
        LossOutputs {
            metrics,
            logprobs: None,
            entropy: None,
            lse: None,
        }
    }

    /// With each row's target log-prob written to `v`.
    pub fn with_logprobs(mut self, v: F32View<'a>) -> Self {
        self.logprobs = Some(v);
        self
    }

    /// With each row's entropy written to `v`.
    pub fn with_entropy(mut self, v: F32View<'a>) -> Self {
        self.entropy = Some(v);
        self
    }

    /// With each row's log-sum-exp written to `v`.
    pub fn with_lse(mut self, v: F32View<'a>) -> Self {
        self.lse = Some(v);
        self
    }
}

/// Device buffers for the results, owned by the caller.
#[derive(Debug)]
pub struct LossBuffers {
    /// [`Metrics::LEN`](crate::Metrics::LEN) f32, as [`Metrics::from_slice`](crate::Metrics::from_slice) reads them: loss, pg_clipfrac,
    /// pg_clipfrac_lower, ppo_kl, kl, entropy_mean, nonfinite_rows, mask sum, first
    /// invalid target row and id (u32 bits), the selection and rollout metrics, and the
    /// bad per-row inputs (their count, the first row, its tensor and value).
    pub metrics: wgpu::Buffer,
    /// `rows` f32: each row's target log-prob.
    pub logprobs: wgpu::Buffer,
    /// `rows` f32: each row's entropy.
    pub entropy: wgpu::Buffer,
    /// `rows` f32: each row's log-sum-exp.
    pub lse: wgpu::Buffer,
}

impl LossBuffers {
    /// The four buffers for a call of `rows` rows (all parts together), with usage
    /// STORAGE | COPY_SRC | COPY_DST, counted in [`Context::allocations`].
    pub fn new(ctx: &Context, rows: u32) -> Self {
        let make = |label, len: u64| {
            ctx.buffer(
                label,
                len.max(1) * 4,
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            )
        };
        LossBuffers {
            metrics: make("metrics", METRICS),
            logprobs: make("logprobs", rows as u64),
            entropy: make("entropy", rows as u64),
            lse: make("lse", rows as u64),
        }
    }

    /// Views of all four buffers from their start: every output written.
    pub fn outputs(&self) -> LossOutputs<'_> {
        LossOutputs {
            metrics: F32View::new(&self.metrics),
            logprobs: Some(F32View::new(&self.logprobs)),
            entropy: Some(F32View::new(&self.entropy)),
            lse: Some(F32View::new(&self.lse)),
        }
    }
}

/// A given kept set replays the sampler's choice: computing one too is a contradiction.
pub(crate) fn check_kept(cfg: &crate::LossConfig) -> crate::error::Result<()> {
    if cfg.computes_kept_set() {
        return Err(crate::error::Error::arg(
            "keep_offsets",
            "a given kept set together with top_k, top_p or min_p: give one or the other",
        ));
    }
    Ok(())
}

/// `Err` naming the option where a kept set is computed (top-k, top-p, min-p): its
/// rules need each row whole, which a vocabulary shard is not
/// (docs/MATH.md#given-kept-sets allows the refusal).
pub(crate) fn computed_on_whole_rows(cfg: &crate::LossConfig) -> crate::error::Result<()> {
    match cfg.kept_option() {
        Some(option) => Err(crate::error::Error::arg(
            option,
            "a kept set computed by the kernels (top-k, top-p, min-p) needs whole rows: \
             with vocabulary shards, give the sampler's kept set (keep_offsets, keep_ids)",
        )),
        None => Ok(()),
    }
}

/// Per-row temperatures replace the scalar one, which must then be left at 1.
pub(crate) fn check_temperatures(cfg: &crate::LossConfig) -> crate::error::Result<()> {
    if cfg.temperature != 1.0 {
        return Err(crate::error::Error::arg(
            "temperature",
            format!(
                "must be 1 when per-row temperatures are given, got {}",
                cfg.temperature
            ),
        ));
    }
    Ok(())
}
