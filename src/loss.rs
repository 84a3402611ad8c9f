//! The policy loss: plans a forward (+ backward) call, records its kernels into the
//! caller's encoder, and leaves the loss, metrics, per-row outputs and the gradient on
//! the device. This is the only place that knows the order of kernels in a step:
//!
//! ```text
//! prepare        1 workgroup     per-row inputs gathered; aggregation weights per sequence
//! policy_loss    1 per row       sweep 1 (stats), token loss, sweep 2 (gradient)
//!   gspo: policy_loss (stats only) → gspo_ratio (1 workgroup) → policy_loss (loss, gradient)
//! reduce         1 workgroup     loss and metrics; per-row log-probs and entropies
//! ```
//!
//! Logits in several buffers ([`PolicyLoss::record_parts`]): `prepare` gathers each
//! part, then one more `prepare` launch computes the weights of every sequence; each
//! part has its own row launches; one `reduce` covers every row. A call is planned
//! (validated, its parts laid out in the scratch buffers) before anything is recorded.
//!
//! Scratch is O(rows): see [`PolicyLoss::scratch_bytes`]. It is owned by the
//! `PolicyLoss` and reused from call to call.

use std::sync::Mutex;

use crate::config::{LossConfig, PolicyLossMode};
use crate::context::Context;
use crate::error::{Error, Result, RowInput};
use crate::kernels::combine::{CombineOut, Gathered};
use crate::kernels::policy_loss::{
    GradDest, RowCall, HAS_ROLLOUT, HAS_SELECTION, PHASE_LOSS, PHASE_STATS, RENORMALIZE,
};
use crate::kernels::prepare::{AllSeqs, PartRows, RowInputs, GATHER, HAS_OLD, HAS_REF, WEIGHTS};
use crate::kernels::reduce::METRICS;
use crate::kernels::row_partials::PartialsOut;
use crate::kernels::{
    column_blocks, combine, gspo_ratio, policy_loss, prepare, reduce, row_partials, select,
    ColumnBlock, PartSpans, RowSpan,
};
use crate::shards::{VocabShards, PARTIAL_BYTES};
use crate::view::{DType, F32View, LogitsView, RowLayout, TargetsView};

/// Advantages, per sequence (`[B]`, broadcast over its rows) or per row.
#[derive(Clone, Copy, Debug)]
pub enum Advantages<'a> {
    PerSequence(F32View<'a>),
    PerToken(F32View<'a>),
}

/// The device inputs of one call. Rows are grouped into sequences by the logits view
/// (`rows_per_seq`): one sequence for a plain `[T, V]` view.
#[derive(Clone, Copy, Debug)]
pub struct LossInputs<'a> {
    pub logits: LogitsView<'a>,
    pub targets: TargetsView<'a>,
    /// One f32 per row: 0 outside the response, 1 inside (other values ≥ 0 weight
    /// linearly). A negative, NaN or ±inf value is bad input: its row's loss and
    /// gradient are NaN and [`Metrics::check`] names it.
    pub mask: F32View<'a>,
    pub advantages: Advantages<'a>,
    /// Behaviour-policy log-probs; without them `ppo_clip` and `gspo` are on-policy.
    pub old_logprobs: Option<F32View<'a>>,
    /// Reference-policy log-probs for the KL term (required when `kl_coef != 0`).
    pub ref_logprobs: Option<F32View<'a>>,
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

    /// The per-row inputs `prepare` gathers.
    fn row_inputs(&self) -> RowInputs<'a> {
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
        }
    }
}

/// One part of a call of [`PolicyLoss::record_parts`]: its inputs, where its gradient
/// goes, and the sampler's log-probs where the loss corrects for the rollout
/// ([`LossConfig::rollout_correction`](crate::LossConfig)). A pair `(inputs, gradient)`
/// is a part without them.
#[derive(Clone, Copy, Debug)]
pub struct LossPart<'a> {
    pub inputs: LossInputs<'a>,
    pub gradient: Gradient<'a>,
    /// The inference engine's log-probs of the sampled tokens, one per row (vLLM's,
    /// SGLang's); only read where the mask is > 0.
    pub rollout_logprobs: Option<F32View<'a>>,
}

impl<'a> LossPart<'a> {
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
    pub buffer: &'a wgpu::Buffer,
    pub dtype: DType,
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

/// Where the results go. `metrics` receives [`Metrics::LEN`] f32 values, the loss first
/// (see [`Metrics::from_slice`]); reading it back and calling [`Metrics::check`] is the
/// validation of the token ids and of the other per-row inputs (SPEC "Bad input").
#[derive(Clone, Copy, Debug)]
pub struct LossOutputs<'a> {
    pub metrics: F32View<'a>,
    pub logprobs: Option<F32View<'a>>,
    pub entropy: Option<F32View<'a>>,
}

/// Device buffers for the results, owned by the caller.
#[derive(Debug)]
pub struct LossBuffers {
    /// [`Metrics::LEN`] f32, as [`Metrics::from_slice`] reads them: loss, pg_clipfrac,
    /// pg_clipfrac_lower, ppo_kl, kl, entropy_mean, nonfinite_rows, mask sum, first
    /// invalid target row and id (u32 bits), the selection and rollout metrics, and the
    /// bad per-row inputs (their count, the first row, its tensor and value).
    pub metrics: wgpu::Buffer,
    pub logprobs: wgpu::Buffer,
    pub entropy: wgpu::Buffer,
}

impl LossBuffers {
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
        }
    }

    pub fn outputs(&self) -> LossOutputs<'_> {
        LossOutputs {
            metrics: F32View::new(&self.metrics),
            logprobs: Some(F32View::new(&self.logprobs)),
            entropy: Some(F32View::new(&self.entropy)),
        }
    }
}

/// The loss and SPEC's metrics, as read back from the device.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub loss: f32,
    pub pg_clipfrac: f32,
    pub pg_clipfrac_lower: f32,
    pub ppo_kl: f32,
    pub kl: f32,
    pub entropy_mean: f32,
    /// Masked-in rows whose logits hold NaN or ±inf (their loss terms are NaN).
    pub nonfinite_rows: f32,
    /// Σ mask.
    pub mask_sum: f32,
    /// The first masked-in row whose token id is outside the vocabulary, and that id.
    pub invalid_target: Option<(u32, u32)>,
    /// Share of masked-in tokens that `clip_cov` / `kl_cov` selected.
    pub cov_selected_frac: f32,
    /// Share of masked-in tokens the top-entropy mask kept (1 without it).
    pub entropy_mask_frac: f32,
    /// The rollout correction's weights over masked-in tokens (0 without it): mean,
    /// min, max, the share truncated or masked, and the largest |δ|.
    pub rollout_is_mean: f32,
    pub rollout_is_min: f32,
    pub rollout_is_max: f32,
    pub rollout_is_clipfrac: f32,
    pub rollout_logp_diff_max: f32,
    /// Rows whose other per-row inputs the loss cannot use (SPEC "Bad input"): a mask
    /// that is negative, NaN or ±inf on any row, or a NaN or ±inf advantage, old, ref or
    /// rollout log-prob on a masked-in row that the call reads. Their loss terms and
    /// gradients are NaN where the value is NaN (or the mask bad); ±inf log-probs keep
    /// SPEC's clamps.
    pub invalid_input_rows: f32,
    /// The first of those rows: which input, the row, and the value there.
    pub invalid_input: Option<InvalidInput>,
}

/// The first row of a call whose per-row input is bad (see [`Metrics::invalid_input`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InvalidInput {
    pub tensor: RowInput,
    /// Counted over every part's rows in order.
    pub row: u32,
    pub value: f32,
}

impl Metrics {
    /// Number of f32 values in the device metrics buffer.
    pub const LEN: usize = METRICS as usize;

    pub fn from_slice(v: &[f32]) -> Self {
        Metrics {
            loss: v[0],
            pg_clipfrac: v[1],
            pg_clipfrac_lower: v[2],
            ppo_kl: v[3],
            kl: v[4],
            entropy_mean: v[5],
            nonfinite_rows: v[6],
            mask_sum: v[7],
            invalid_target: match v[8].to_bits() {
                u32::MAX => None,
                row => Some((row, v[9].to_bits())),
            },
            cov_selected_frac: v.get(10).copied().unwrap_or(0.0),
            entropy_mask_frac: v.get(11).copied().unwrap_or(0.0),
            rollout_is_mean: v.get(12).copied().unwrap_or(0.0),
            rollout_is_min: v.get(13).copied().unwrap_or(0.0),
            rollout_is_max: v.get(14).copied().unwrap_or(0.0),
            rollout_is_clipfrac: v.get(15).copied().unwrap_or(0.0),
            rollout_logp_diff_max: v.get(16).copied().unwrap_or(0.0),
            invalid_input_rows: v.get(17).copied().unwrap_or(0.0),
            invalid_input: v.get(18).and_then(|row| {
                let tensor = RowInput::from_code(v.get(19)?.to_bits())?;
                Some(InvalidInput {
                    tensor,
                    row: row.to_bits(),
                    value: v.get(20).copied().unwrap_or(f32::NAN),
                })
            }),
        }
    }

    /// `Err` naming the first bad row: of a bad per-row input (the error the host API
    /// gives for the same input, [`Error::InvalidInput`]), else of a masked-in token id
    /// outside `[0, vocab)`. The loss is then NaN, and so is that row's gradient (a ±inf
    /// log-prob keeps SPEC's clamps, and only the error says it was bad).
    pub fn check(&self, vocab: u32) -> Result<()> {
        if let Some(b) = self.invalid_input {
            return Err(Error::InvalidInput {
                tensor: b.tensor,
                row: b.row as usize,
                value: b.value,
            });
        }
        match self.invalid_target {
            Some((row, id)) => Err(Error::TargetOutOfRange {
                row: row as usize,
                id: id as i64,
                vocab,
            }),
            None => Ok(()),
        }
    }
}

/// O(rows) buffers reused from call to call, each grown (never shrunk) on its own.
#[derive(Default)]
struct Scratch {
    rowin: Option<(u32, wgpu::Buffer)>,
    rowout: Option<(u32, wgpu::Buffer)>,
    seqinfo: Option<(u32, wgpu::Buffer)>,
    /// select.wgsl's per-row results, made only for the calls that need them.
    rowaux: Option<(u32, wgpu::Buffer)>,
    /// Bound where the caller wants no per-row output.
    spare: Option<(u32, wgpu::Buffer)>,
    /// Partial statistics of column blocks, for rows longer than one binding.
    partials: Option<(u32, wgpu::Buffer)>,
}

/// Bytes per row and per sequence of the scratch buffers.
const ROWIN_BYTES: u64 = 16;
const ROWOUT_BYTES: u64 = 32;
const SEQINFO_BYTES: u64 = 16;
const ROWAUX_BYTES: u64 = 32;
/// The stand-in for per-row outputs the caller does not want.
const SPARE_BYTES: u64 = 16;
/// Upper bound of one launch's (or one chunk's) uniform block: parameter blocks are at
/// most 144 bytes and `min_uniform_buffer_offset_alignment` is at most 256.
const UNIFORM_BYTES: u64 = 256;

/// A configured policy loss on one device.
pub struct PolicyLoss {
    ctx: Context,
    config: LossConfig,
    scratch: Mutex<Scratch>,
}

impl std::fmt::Debug for PolicyLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyLoss")
            .field("context", &self.ctx)
            .field("config", &self.config)
            .finish()
    }
}

impl PolicyLoss {
    pub fn new(ctx: &Context, config: LossConfig) -> Result<Self> {
        config.validate()?;
        Ok(PolicyLoss {
            ctx: ctx.clone(),
            config,
            scratch: Mutex::new(Scratch::default()),
        })
    }

    pub fn config(&self) -> &LossConfig {
        &self.config
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Device memory one call with these inputs may allocate, in bytes, known before
    /// the call: 48 bytes a row and 16 a sequence of scratch (allocated on first use and
    /// reused after), 16 bytes of spare, plus a small uniform block per launch and per
    /// chunk of rows (32 bytes a row more where the loss chooses tokens batch-wide). No
    /// `[rows, V]` buffer is ever made: only rows longer than one binding add 16 bytes a
    /// row per column block, V·elem / binding size of them.
    pub fn scratch_bytes(&self, inputs: &LossInputs<'_>, gradient: &Gradient<'_>) -> Result<u64> {
        self.scratch_bytes_parts(&[(*inputs, *gradient)])
    }

    /// [`PolicyLoss::scratch_bytes`] of a call of [`PolicyLoss::record_parts`].
    pub fn scratch_bytes_parts<'a, P: Copy + Into<LossPart<'a>>>(
        &self,
        parts: &[P],
    ) -> Result<u64> {
        let shapes = parts
            .iter()
            .map(|&p| {
                let p: LossPart<'a> = p.into();
                let grad = match p.gradient {
                    Gradient::Into(g) => Some((g.layout, g.dtype)),
                    _ => None,
                };
                PartShape {
                    rows: p.inputs.logits.rows,
                    layout: p.inputs.logits.layout,
                    vocab: p.inputs.logits.vocab,
                    dtype: p.inputs.logits.dtype,
                    targets: p.inputs.targets.layout,
                    grad,
                    has_old: p.inputs.old_logprobs.is_some(),
                }
            })
            .collect::<Vec<_>>();
        self.scratch_for(&shapes)
    }

    /// [`PolicyLoss::scratch_bytes`] for dense logits `[rows, vocab]` in sequences of
    /// `rows_per_seq`, with dense targets and a dense separate gradient of `grad` (none
    /// for forward only or in place), with old log-probs.
    pub fn scratch_bytes_dense(
        &self,
        rows: u32,
        rows_per_seq: u32,
        vocab: u32,
        dtype: DType,
        grad: Option<DType>,
    ) -> Result<u64> {
        let dense = |width: u64| RowLayout {
            offset: 0,
            row_stride: width,
            rows_per_seq: rows_per_seq.max(1),
            seq_stride: rows_per_seq.max(1) as u64 * width,
        };
        self.scratch_for(&[PartShape {
            rows,
            layout: dense(vocab as u64),
            vocab,
            dtype,
            targets: dense(1),
            grad: grad.map(|d| (dense(vocab as u64), d)),
            has_old: true,
        }])
    }

    fn scratch_for(&self, parts: &[PartShape]) -> Result<u64> {
        let limits = self.ctx.device().limits();
        let cfg = &self.config;
        let phases = select::phases(cfg);
        let (mut rows, mut seqs, mut blocks, mut live) = (0u64, 0u64, 1u64, 0u64);
        let has_old = parts.first().is_some_and(|p| p.has_old);
        let spans: Vec<PartSpans> = parts.iter().map(PartShape::spans).collect();
        let vocab = parts.first().map_or(1, |p| p.vocab);
        let cols = column_blocks(&self.ctx, vocab, &spans)?;
        let split = cols.len() > 1;
        let mut extra = 0u64;
        for (p, sp) in parts.iter().zip(&spans).filter(|(p, _)| p.rows > 0) {
            let rows_per_seq = p.layout.rows_per_seq.min(p.rows).max(1);
            rows += p.rows as u64;
            seqs += p.rows.div_ceil(rows_per_seq) as u64;
            live += 1;
            let chunks = |s: &[RowSpan]| -> Result<u64> {
                Ok(crate::kernels::plan_chunks(p.rows, s, &limits)?.len() as u64)
            };
            // the part's prepare, then per column block its row launch, and its
            // statistics launch (or its partials) first where the loss needs them
            blocks += 1;
            for &(col, w) in &cols {
                let block: Vec<RowSpan> = sp
                    .per_column
                    .iter()
                    .map(|s| s.columns(col, w))
                    .chain(sp.per_row.iter().copied())
                    .collect();
                blocks += chunks(&block)?;
                if split || cfg.needs_stats_first(has_old) {
                    blocks += chunks(&[block[0], sp.per_row[0]])?;
                }
            }
            if split {
                // combine's launch, its column starts and its spare binding
                blocks += chunks(&sp.per_row)?;
                extra += 4 * (cols.len() as u64 + 1) + 16;
            }
            if cfg.mode == PolicyLossMode::Gspo {
                blocks += 1;
            }
            blocks += (phases & select::PER_PART).count_ones() as u64;
        }
        // several parts: one more prepare launch (the weights), and the select phases
        // over every row or sequence; one part: one select launch in all
        if live > 1 {
            blocks += 1 + (phases & !select::PER_PART).count_ones() as u64;
        } else if phases != 0 {
            blocks += 1;
        }
        let aux = if phases != 0 { ROWAUX_BYTES } else { 0 };
        if split {
            extra += cols.len() as u64 * rows.max(1) * PARTIAL_BYTES;
        }
        Ok(rows.max(1) * (ROWIN_BYTES + ROWOUT_BYTES + aux)
            + seqs.max(1) * SEQINFO_BYTES
            + SPARE_BYTES
            + blocks * UNIFORM_BYTES
            + extra)
    }

    /// Kernel launches per call of one part whose rows fit one chunk, with old
    /// log-probs: prepare, policy_loss, reduce (3); a launch for every row's statistics
    /// first where the loss needs them all before any gradient (GSPO, `clip_cov`,
    /// `kl_cov`, the top-entropy mask, a rollout correction without old log-probs);
    /// GSPO's ratio; `select` for the rollout weights, the entropy mask and the
    /// covariance selection. Each further chunk of rows is one more dispatch of the row
    /// kernel; each further part of [`PolicyLoss::record_parts`] adds its own launches.
    pub fn launches(&self) -> usize {
        self.launches_for(true)
    }

    /// [`PolicyLoss::launches`] with or without old log-probs.
    pub fn launches_for(&self, has_old: bool) -> usize {
        let cfg = &self.config;
        3 + cfg.needs_stats_first(has_old) as usize
            + (cfg.mode == PolicyLossMode::Gspo) as usize
            + (select::phases(cfg) != 0) as usize
    }

    /// Records the loss (and, unless `gradient` is [`Gradient::None`], its gradient with
    /// respect to the logits) into `encoder`. Reads nothing back.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &LossInputs<'_>,
        gradient: Gradient<'_>,
        outputs: &LossOutputs<'_>,
    ) -> Result<()> {
        self.record_parts(encoder, &[(*inputs, gradient)], outputs)
    }

    /// One loss over logits that live in several buffers — a trainer's micro-batches,
    /// or a batch larger than the device's largest buffer. Each part is the
    /// [`LossInputs`] of whole sequences with a gradient of its own; the loss, the
    /// metrics and the aggregation are those of the whole batch, the parts' rows one
    /// after the other as if in one buffer: `token-mean` divides by Σ mask over every
    /// part, the `seq-mean` modes average over every part's sequences, and `L_norm`
    /// defaults to the longest sequence of any part (the padded width one buffer would
    /// need). Per-row outputs hold every part's rows in order, and so does the row of an
    /// invalid token id. Where the rows are the same, the results have the same bits as
    /// one buffer's. Every part has the same vocabulary, and old (reference) log-probs
    /// in every part or in none.
    ///
    /// ```no_run
    /// # use wgpu_policy_loss::*;
    /// # fn f(loss: &PolicyLoss, enc: &mut wgpu::CommandEncoder, a: LossInputs<'_>,
    /// #      b: LossInputs<'_>, out: &LossBuffers) -> Result<()> {
    /// loss.record_parts(enc, &[(a, Gradient::InPlace), (b, Gradient::InPlace)], &out.outputs())
    /// # }
    /// ```
    pub fn record_parts<'a, P: Copy + Into<LossPart<'a>>>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        parts: &[P],
        outputs: &LossOutputs<'_>,
    ) -> Result<()> {
        let parts: Vec<LossPart<'a>> = parts.iter().map(|&p| p.into()).collect();
        let plan = self.plan(&parts, Some(outputs), None)?;
        self.encode(encoder, &plan, outputs, None)
    }

    /// The first step of a loss over a vocabulary split into shards (a tensor-parallel
    /// lm-head, see [`VocabShards`]): shard `rank`'s partial row statistics of its
    /// columns, [`PARTIAL_FLOATS`](crate::PARTIAL_FLOATS) f32 a row written to
    /// `partials` (16-byte aligned). `logits` are the shard's columns (`vocab` =
    /// `shards.width(rank)`); `targets` hold ids of the whole vocabulary. The caller
    /// gathers every shard's partials in rank order (an all-gather) and hands them to
    /// [`PolicyLoss::record_shard_loss`]. Uses the config's temperature alone.
    pub fn record_shard_partials(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shards: &VocabShards,
        rank: usize,
        logits: &LogitsView<'_>,
        targets: &TargetsView<'_>,
        partials: F32View<'_>,
    ) -> Result<()> {
        shards.check_rank(rank)?;
        check_shard_columns(shards, rank, logits)?;
        logits.validate()?;
        let rows = logits.rows;
        targets.validate(rows)?;
        crate::view::check_aliasing(
            &[("logits", logits.buffer), ("targets", targets.buffer)],
            &[("partials", partials.buffer)],
        )?;
        let limits = self.ctx.device().limits();
        let (binding, offset) = vec4_window("partials", &partials, rows as u64, &limits)?;
        let cols = column_blocks(
            &self.ctx,
            logits.vocab,
            &[PartSpans {
                rows,
                per_column: vec![logits.span()],
                per_row: vec![targets.span()],
            }],
        )?;
        let out = PartialsOut { binding, offset };
        let col_offset = shards.offset(rank);
        if let [_] = cols[..] {
            let inv_tau = crate::kernels::row_stats::check_temperature(self.config.temperature)?;
            return row_partials::record(
                &self.ctx, encoder, logits, targets, inv_tau, col_offset, &out,
            );
        }
        // a shard row longer than one binding: its blocks merged into its partial
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let scratch = &mut *guard;
        let blocks = self.block_partials(
            encoder,
            &mut scratch.partials,
            &cols,
            col_offset,
            [(logits, targets, 0)],
            rows,
        )?;
        combine::record(
            &self.ctx,
            encoder,
            rows,
            targets,
            &block_starts(&cols, col_offset),
            &blocks,
            &CombineOut::Partial(out),
        )
    }

    /// The second step of a loss over a split vocabulary: merges `gathered`, every
    /// shard's partials in rank order (`[K, rows, 4]` f32, as
    /// [`PolicyLoss::record_shard_partials`] wrote them), into the statistics of whole
    /// rows, then records the loss, the metrics and the per-row outputs of the whole
    /// vocabulary and the gradient of shard `rank`'s columns. The part's logits (and its
    /// gradient) are the shard's columns, its other inputs those of every row. Every rank
    /// that merges the same partials gets the same bits, so the ranks agree on the loss.
    ///
    /// ```no_run
    /// # use wgpu_policy_loss::*;
    /// # fn f(loss: &PolicyLoss, enc: &mut wgpu::CommandEncoder, shards: &VocabShards,
    /// #      rank: usize, inputs: LossInputs<'_>, partials: F32View<'_>,
    /// #      gathered: F32View<'_>, out: &LossBuffers) -> Result<()> {
    /// loss.record_shard_partials(enc, shards, rank, &inputs.logits, &inputs.targets, partials)?;
    /// // ... all-gather every rank's partials into `gathered`, in rank order ...
    /// loss.record_shard_loss(enc, shards, rank, (inputs, Gradient::InPlace), gathered, &out.outputs())
    /// # }
    /// ```
    pub fn record_shard_loss<'a, P: Into<LossPart<'a>>>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shards: &VocabShards,
        rank: usize,
        part: P,
        gathered: F32View<'_>,
        outputs: &LossOutputs<'_>,
    ) -> Result<()> {
        shards.check_rank(rank)?;
        let part: LossPart<'a> = part.into();
        check_shard_columns(shards, rank, &part.inputs.logits)?;
        let shard = ShardCall {
            starts: shards.starts(),
            col_offset: shards.offset(rank),
            vocab: shards.vocab(),
            gathered,
        };
        let plan = self.plan(&[part], Some(outputs), Some(&shard))?;
        self.encode(encoder, &plan, outputs, Some(&shard))
    }

    /// Validates a call (with its outputs, unless `None`) and lays its parts out in the
    /// scratch buffers; records nothing.
    fn plan<'a>(
        &self,
        parts: &[LossPart<'a>],
        outputs: Option<&LossOutputs<'_>>,
        shard: Option<&ShardCall<'_>>,
    ) -> Result<Plan<'a>> {
        let Some(first) = parts.first().map(|p| &p.inputs) else {
            return Err(Error::arg(
                "parts",
                "is empty: a call needs at least one part",
            ));
        };
        let many = parts.len() > 1;
        let mut plan = Plan {
            parts: Vec::with_capacity(parts.len()),
            rows: 0,
            seqs: 0,
            l_norm: 1.0,
            has_old: first.old_logprobs.is_some(),
            cols: Vec::new(),
            col_offset: shard.map_or(0, |s| s.col_offset),
            vocab_total: shard.map_or(first.logits.vocab, |s| s.vocab),
        };
        let mut longest = 1;
        for (i, lp) in parts.iter().enumerate() {
            let inputs = &lp.inputs;
            let part = plan_part(&self.config, lp, outputs, plan.rows, plan.seqs)
                .and_then(|p| {
                    if inputs.logits.vocab != first.logits.vocab {
                        return Err(Error::arg(
                            "logits",
                            format!(
                                "has a vocabulary of {}, part 0 of {}: every part needs the same",
                                inputs.logits.vocab, first.logits.vocab
                            ),
                        ));
                    }
                    for (arg, here, there) in [
                        ("old_logprobs", inputs.old_logprobs, first.old_logprobs),
                        ("ref_logprobs", inputs.ref_logprobs, first.ref_logprobs),
                    ] {
                        if here.is_some() != there.is_some() {
                            return Err(Error::arg(
                            arg,
                            "given for some parts and not others: give them for every part or none",
                        ));
                        }
                    }
                    Ok(p)
                })
                .map_err(|e| in_part(e, i, many))?;
            plan.rows = plan.rows.checked_add(part.rows.rows).ok_or_else(|| {
                Error::arg("logits", "the parts hold more than 2^32 - 1 rows in all")
            })?;
            plan.seqs += part.rows.seqs;
            if part.rows.rows > 0 {
                longest = longest.max(part.rows.rows_per_seq);
            }
            plan.parts.push(part);
        }
        plan.l_norm = self.config.l_norm.unwrap_or(longest as f32);
        if let Some(outputs) = outputs {
            outputs
                .metrics
                .validate("outputs.metrics", METRICS as u32)?;
            if let Some(v) = &outputs.logprobs {
                v.validate("outputs.logprobs", plan.rows)?;
            }
            if let Some(v) = &outputs.entropy {
                v.validate("outputs.entropy", plan.rows)?;
            }
        }
        check_parts_apart(&plan.parts)?;
        if let Some(s) = shard {
            let len = (s.starts.len() - 1) as u64 * plan.rows as u64 * 4;
            let len = u32::try_from(len)
                .map_err(|_| Error::arg("gathered", "holds more than 2^32 - 1 values"))?;
            s.gathered.validate("gathered", len)?;
            let mut writes = vec![("outputs.metrics", outputs.map(|o| o.metrics.buffer))];
            if let Some(o) = outputs {
                writes.push(("outputs.logprobs", o.logprobs.map(|v| v.buffer)));
                writes.push(("outputs.entropy", o.entropy.map(|v| v.buffer)));
            }
            for p in &plan.parts {
                writes.push(match &p.grad {
                    GradDest::Separate { buffer, .. } => ("gradient", Some(*buffer)),
                    GradDest::InPlace | GradDest::Beside { .. } => {
                        ("logits", Some(p.logits.buffer))
                    }
                    GradDest::None => ("gradient", None),
                });
            }
            let writes: Vec<_> = writes
                .into_iter()
                .filter_map(|(a, b)| b.map(|b| (a, b)))
                .collect();
            crate::view::check_aliasing(&[("gathered", s.gathered.buffer)], &writes)?;
        }
        plan.cols = column_blocks(
            &self.ctx,
            first.logits.vocab,
            &plan.parts.iter().map(PartPlan::spans).collect::<Vec<_>>(),
        )?;
        Ok(plan)
    }

    /// Records the partials of every column block of `parts` (logits, ids, first row in
    /// the scratch) into the scratch's partials, `stride` rows a block; returns them as
    /// combine's input.
    fn block_partials<'s, 'v: 's, const N: usize>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        slot: &'s mut Option<(u32, wgpu::Buffer)>,
        cols: &[ColumnBlock],
        col_offset: u32,
        parts: [(&LogitsView<'v>, &TargetsView<'v>, u32); N],
        stride: u32,
    ) -> Result<Gathered<'s>> {
        let limits = self.ctx.device().limits();
        let items = cols.len() as u64 * stride as u64;
        let n = u32::try_from(items).map_err(|_| {
            Error::arg(
                "logits",
                format!("{} column blocks of {stride} rows are too many", cols.len()),
            )
        })?;
        let buffer = self.grow(slot, "partials", n, PARTIAL_BYTES);
        let (binding, _) =
            crate::kernels::storage_window("logits", buffer, 0, items, PARTIAL_BYTES, &limits)?;
        let inv_tau = crate::kernels::row_stats::check_temperature(self.config.temperature)?;
        for (logits, targets, at) in parts {
            for (j, &(col, w)) in cols.iter().enumerate() {
                let out = PartialsOut {
                    binding: binding.clone(),
                    offset: j as u32 * stride + at,
                };
                let block = block_view(logits, col, w);
                row_partials::record(
                    &self.ctx,
                    encoder,
                    &block,
                    targets,
                    inv_tau,
                    col_offset + col,
                    &out,
                )?;
            }
        }
        Ok(Gathered {
            binding,
            offset: 0,
            stride,
        })
    }

    /// Records a planned call: each part's `prepare`, the weights of every sequence, each
    /// part's row launches, then one `reduce` over every row.
    fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        plan: &Plan<'_>,
        outputs: &LossOutputs<'_>,
        shard: Option<&ShardCall<'_>>,
    ) -> Result<()> {
        let cfg = &self.config;
        let phases = select::phases(cfg);
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let scratch = &mut *guard;
        let rowin = self.grow(&mut scratch.rowin, "rowin", plan.rows, ROWIN_BYTES);
        let rowout = self.grow(&mut scratch.rowout, "rowout", plan.rows, ROWOUT_BYTES);
        let seqinfo = self.grow(&mut scratch.seqinfo, "seqinfo", plan.seqs, SEQINFO_BYTES);
        let spare = self.grow(&mut scratch.spare, "spare", 1, SPARE_BYTES);
        // select's per-row results, where there are any (else the spare stands in)
        let rowaux = match phases {
            0 => spare,
            _ => self.grow(&mut scratch.rowaux, "rowaux", plan.rows, ROWAUX_BYTES),
        };
        let ctx = &self.ctx;
        let (logprobs, entropy) = (outputs.logprobs.as_ref(), outputs.entropy.as_ref());
        let m = &outputs.metrics;
        // (reduce binds rowin read-only already: it stands in for rowaux when there is
        // none, where the spare, bound writable there, cannot)
        let no_aux = reduce::Aux {
            buffer: rowin,
            rollout: false,
            selection: false,
        };
        if plan.rows == 0 {
            // an empty batch still gets its metrics: loss 0, no invalid id
            return reduce::record(
                ctx, encoder, 0, 0, rowin, rowout, no_aux, spare, m, None, None,
            );
        }
        self.encode_prepare(encoder, plan, rowin, seqinfo, rowaux)?;
        let live: Vec<&PartPlan<'_>> = plan.parts.iter().filter(|p| p.rows.rows > 0).collect();
        let mut flags = 0;
        if phases & select::ROLLOUT != 0 {
            flags |= HAS_ROLLOUT;
        }
        if phases & select::SELECT != 0 {
            flags |= HAS_SELECTION;
        }
        if cfg.top_entropy_renormalize {
            flags |= RENORMALIZE;
        }
        let scratch_bufs = [rowin, seqinfo, rowout, rowaux];
        let split = plan.cols.len() > 1 || shard.is_some();
        // every row's statistics first where the loss needs them all before a gradient,
        // or where no launch sees a whole row
        let two_phase = cfg.needs_stats_first(plan.has_old) || split;
        if let Some(s) = shard {
            let limits = ctx.device().limits();
            let shards = (s.starts.len() - 1) as u64;
            let (binding, first) =
                vec4_window("gathered", &s.gathered, shards * plan.rows as u64, &limits)?;
            for p in &live {
                let input = Gathered {
                    binding: binding.clone(),
                    offset: first + p.rows.part_row,
                    stride: plan.rows,
                };
                combine::record(
                    ctx,
                    encoder,
                    p.rows.rows,
                    &p.targets,
                    s.starts,
                    &input,
                    &CombineOut::Stats {
                        rowout,
                        part_row: p.rows.part_row,
                    },
                )?;
            }
        } else if split {
            let starts = block_starts(&plan.cols, 0);
            for p in &live {
                let blocks = self.block_partials(
                    encoder,
                    &mut scratch.partials,
                    &plan.cols,
                    0,
                    [(&p.logits, &p.targets, p.rows.part_row)],
                    plan.rows,
                )?;
                let input = Gathered {
                    offset: p.rows.part_row,
                    ..blocks
                };
                combine::record(
                    ctx,
                    encoder,
                    p.rows.rows,
                    &p.targets,
                    &starts,
                    &input,
                    &CombineOut::Stats {
                        rowout,
                        part_row: p.rows.part_row,
                    },
                )?;
            }
        } else if two_phase {
            for p in &live {
                let call = row_call(cfg, p, flags, scratch_bufs, &p.logits, &p.grad);
                policy_loss::record(ctx, encoder, &call, PHASE_STATS)?;
            }
        }
        if cfg.mode == PolicyLossMode::Gspo {
            for p in &live {
                gspo_ratio::record(ctx, encoder, &p.rows, rowin, rowout, seqinfo)?;
            }
        }
        if phases != 0 {
            let totals = select::Totals {
                rows: plan.rows,
                seqs: plan.seqs,
                l_norm: plan.l_norm,
            };
            let sc = select::Scratch {
                rowin,
                rowout,
                rowaux,
                seqinfo,
            };
            let launch = |encoder: &mut wgpu::CommandEncoder, part: &PartRows<'_>, ph: u32| {
                select::record(ctx, encoder, cfg, part, plan.has_old, totals, ph, &sc)
            };
            if let [one] = live[..] {
                launch(encoder, &one.rows, phases)?;
            } else {
                // per part, then over every row, per part again, then every sequence
                for ph in [
                    select::ROLLOUT,
                    select::SELECT,
                    select::RENORM_GATHER,
                    select::RENORM_WEIGHTS,
                ] {
                    if phases & ph == 0 {
                        continue;
                    }
                    if ph & select::PER_PART != 0 {
                        for p in &live {
                            launch(encoder, &p.rows, ph)?;
                        }
                    } else {
                        launch(encoder, &live[0].rows, ph)?;
                    }
                }
            }
        }
        let phase = if two_phase {
            PHASE_LOSS
        } else {
            PHASE_STATS | PHASE_LOSS
        };
        for p in &live {
            for &(col, w) in &plan.cols {
                let (logits, grad) = (block_view(&p.logits, col, w), block_grad(&p.grad, col));
                let mut call = row_call(cfg, p, flags, scratch_bufs, &logits, &grad);
                call.col_offset = plan.col_offset + col;
                call.vocab_total = plan.vocab_total;
                policy_loss::record(ctx, encoder, &call, phase)?;
            }
        }
        let aux = reduce::Aux {
            buffer: if phases == 0 { rowin } else { rowaux },
            rollout: phases & select::ROLLOUT != 0,
            selection: phases & select::SELECT != 0,
        };
        // every part has the same optional inputs (plan checks it)
        let inputs = plan
            .parts
            .first()
            .map_or(0, |p| p.row_flags & (HAS_OLD | HAS_REF));
        reduce::record(
            ctx, encoder, plan.rows, inputs, rowin, rowout, aux, spare, m, logprobs, entropy,
        )
    }

    /// Records `prepare` alone, for the benchmarks' stage times (`bench --stages`):
    /// the per-row inputs gathered and the sequences' weights, as
    /// [`PolicyLoss::record_parts`] does first.
    pub(crate) fn record_prepare<'a, P: Copy + Into<LossPart<'a>>>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        parts: &[P],
    ) -> Result<()> {
        let parts: Vec<LossPart<'a>> = parts.iter().map(|&p| p.into()).collect();
        let plan = self.plan(&parts, None, None)?;
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let scratch = &mut *guard;
        let rowin = self.grow(&mut scratch.rowin, "rowin", plan.rows, ROWIN_BYTES);
        let seqinfo = self.grow(&mut scratch.seqinfo, "seqinfo", plan.seqs, SEQINFO_BYTES);
        let spare = self.grow(&mut scratch.spare, "spare", 1, SPARE_BYTES);
        self.encode_prepare(encoder, &plan, rowin, seqinfo, spare)
    }

    /// The parts' `prepare` launches: one part gathers its inputs and computes the
    /// weights in one launch; several gather each, then one launch computes the weights,
    /// which need every part's token counts.
    fn encode_prepare(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        plan: &Plan<'_>,
        rowin: &wgpu::Buffer,
        seqinfo: &wgpu::Buffer,
        rowaux: &wgpu::Buffer,
    ) -> Result<()> {
        let (ctx, cfg) = (&self.ctx, &self.config);
        let live: Vec<&PartRows<'_>> = plan
            .parts
            .iter()
            .map(|p| &p.rows)
            .filter(|r| r.rows > 0)
            .collect();
        let all = AllSeqs {
            seqs: plan.seqs,
            l_norm: plan.l_norm,
        };
        let record = |encoder: &mut wgpu::CommandEncoder, part, phase| {
            prepare::record(ctx, encoder, cfg, part, phase, all, rowin, seqinfo, rowaux)
        };
        match live[..] {
            [] => Ok(()),
            [one] => record(encoder, one, GATHER | WEIGHTS),
            [first, ..] => {
                for p in &live {
                    record(encoder, p, GATHER)?;
                }
                record(encoder, first, WEIGHTS)
            }
        }
    }

    /// A scratch buffer of at least `n` items of `bytes` each, grown when too small.
    fn grow<'s>(
        &self,
        slot: &'s mut Option<(u32, wgpu::Buffer)>,
        label: &str,
        n: u32,
        bytes: u64,
    ) -> &'s wgpu::Buffer {
        if slot.as_ref().is_none_or(|(cap, _)| *cap < n) {
            let buffer =
                self.ctx
                    .buffer(label, n.max(1) as u64 * bytes, wgpu::BufferUsages::STORAGE);
            *slot = Some((n, buffer));
        }
        &slot.as_ref().expect("scratch was just made").1
    }
}

/// The row kernel's call for part `p` over `logits` (the part's, or a block of its
/// columns) with `grad` (the same columns), with `flags` beside the part's own and the
/// scratch buffers rowin, seqinfo, rowout and rowaux.
fn row_call<'b>(
    cfg: &'b LossConfig,
    p: &'b PartPlan<'b>,
    flags: u32,
    [rowin, seqinfo, rowout, rowaux]: [&'b wgpu::Buffer; 4],
    logits: &'b LogitsView<'b>,
    grad: &'b GradDest<'b>,
) -> RowCall<'b> {
    RowCall {
        config: cfg,
        logits,
        targets: &p.targets,
        rows_per_seq: p.rows.rows_per_seq,
        row_flags: p.row_flags | flags,
        part_row: p.rows.part_row,
        part_seq: p.rows.part_seq,
        grad,
        rowin,
        seqinfo,
        rowout,
        rowaux,
        col_offset: 0,
        vocab_total: logits.vocab,
    }
}

/// Columns `[col, col + width)` of every row of `logits`.
fn block_view<'v>(logits: &LogitsView<'v>, col: u32, width: u32) -> LogitsView<'v> {
    let mut v = *logits;
    v.layout.offset += col as u64;
    v.vocab = width;
    v
}

/// The gradient of the columns from `col` on.
fn block_grad<'v>(grad: &GradDest<'v>, col: u32) -> GradDest<'v> {
    let shift = |l: &RowLayout| RowLayout {
        offset: l.offset + col as u64,
        ..*l
    };
    match grad {
        GradDest::None => GradDest::None,
        GradDest::InPlace => GradDest::InPlace,
        GradDest::Separate {
            buffer,
            dtype,
            layout,
        } => GradDest::Separate {
            buffer,
            dtype: *dtype,
            layout: shift(layout),
        },
        GradDest::Beside { layout } => GradDest::Beside {
            layout: shift(layout),
        },
    }
}

/// combine.wgsl's column starts of `cols` (relative to `col_offset` of the whole
/// vocabulary), closed by the end of the last block.
fn block_starts(cols: &[ColumnBlock], col_offset: u32) -> Vec<u32> {
    let mut starts: Vec<u32> = cols.iter().map(|c| col_offset + c.0).collect();
    starts.push(col_offset + cols.last().map_or(0, |c| c.0 + c.1));
    starts
}

/// A binding of `len` 16-byte items of `view` (which starts on a 16-byte boundary) and
/// the item the view starts at.
fn vec4_window<'v>(
    arg: &'static str,
    view: &F32View<'v>,
    len: u64,
    limits: &wgpu::Limits,
) -> Result<(wgpu::BufferBinding<'v>, u32)> {
    if !view.offset.is_multiple_of(PARTIAL_BYTES) {
        return Err(Error::arg(
            arg,
            format!(
                "starts at byte {}; partial statistics start on a 16-byte boundary",
                view.offset
            ),
        ));
    }
    let first = view.offset / PARTIAL_BYTES;
    crate::kernels::storage_window(
        arg,
        view.buffer,
        first,
        first + len.max(1),
        PARTIAL_BYTES,
        limits,
    )
}

/// `Err` unless `logits` are shard `rank`'s columns of every row.
fn check_shard_columns(shards: &VocabShards, rank: usize, logits: &LogitsView<'_>) -> Result<()> {
    if logits.vocab != shards.width(rank) {
        return Err(Error::arg(
            "logits",
            format!(
                "have {} columns, but shard {rank} holds {} (columns {:?} of {})",
                logits.vocab,
                shards.width(rank),
                shards.range(rank),
                shards.vocab()
            ),
        ));
    }
    Ok(())
}

/// A call of [`PolicyLoss::record_shard_loss`]: where its columns lie, and every
/// shard's partials.
struct ShardCall<'s> {
    starts: &'s [u32],
    col_offset: u32,
    vocab: u32,
    gathered: F32View<'s>,
}

/// The shape of one part, for planning memory before a call.
struct PartShape {
    rows: u32,
    layout: RowLayout,
    vocab: u32,
    dtype: DType,
    targets: RowLayout,
    grad: Option<(RowLayout, DType)>,
    has_old: bool,
}

impl PartShape {
    fn spans(&self) -> PartSpans {
        let logits = RowSpan {
            arg: "logits",
            layout: self.layout,
            width: self.vocab as u64,
            elem: self.dtype.size(),
        };
        let mut per_column = vec![logits];
        if let Some((g, d)) = self.grad {
            per_column.push(policy_loss::grad_span(&g, self.vocab, d));
        }
        PartSpans {
            rows: self.rows,
            per_column,
            per_row: vec![RowSpan {
                arg: "targets",
                layout: self.targets,
                width: 1,
                elem: 4,
            }],
        }
    }
}

/// A validated call: its parts, where each part's rows and sequences start in the
/// scratch buffers, and the totals the weights need. Planning touches no device.
struct Plan<'a> {
    parts: Vec<PartPlan<'a>>,
    rows: u32,
    seqs: u32,
    l_norm: f32,
    has_old: bool,
    /// The column blocks of every row (one, the whole row, unless a row is longer than
    /// one binding or one lane's loops allow).
    cols: Vec<ColumnBlock>,
    /// The parts' first column in the whole vocabulary, and its size (a shard's).
    col_offset: u32,
    vocab_total: u32,
}

/// One validated part.
struct PartPlan<'a> {
    logits: LogitsView<'a>,
    targets: TargetsView<'a>,
    rows: PartRows<'a>,
    grad: GradDest<'a>,
    row_flags: u32,
}

impl PartPlan<'_> {
    /// The tensors the row kernel binds, for splitting rows into column blocks.
    fn spans(&self) -> PartSpans {
        let mut per_column = vec![self.logits.span()];
        match &self.grad {
            GradDest::Separate { layout, dtype, .. } => {
                per_column.push(policy_loss::grad_span(layout, self.logits.vocab, *dtype))
            }
            GradDest::Beside { layout } => per_column.push(policy_loss::grad_span(
                layout,
                self.logits.vocab,
                self.logits.dtype,
            )),
            GradDest::InPlace | GradDest::None => {}
        }
        PartSpans {
            rows: self.rows.rows,
            per_column,
            per_row: vec![self.targets.span()],
        }
    }
}

/// The error of part `i` of several, saying which part.
fn in_part(e: Error, i: usize, many: bool) -> Error {
    match e {
        Error::InvalidArgument { arg, reason } if many => Error::InvalidArgument {
            arg,
            reason: format!("(part {i}) {reason}"),
        },
        other => other,
    }
}

/// Validates one part's inputs and gradient (and `outputs` against them) and lays the
/// part out after `rows_before` rows and `seqs_before` sequences of earlier parts.
fn plan_part<'a>(
    cfg: &LossConfig,
    part: &LossPart<'a>,
    outputs: Option<&LossOutputs<'_>>,
    rows_before: u32,
    seqs_before: u32,
) -> Result<PartPlan<'a>> {
    let (inputs, gradient) = (&part.inputs, part.gradient);
    let logits = &inputs.logits;
    logits.validate()?;
    let rows = logits.rows;
    inputs.targets.validate(rows)?;
    let rows_per_seq = logits.layout.rows_per_seq.min(rows).max(1);
    let seqs = if rows == 0 {
        0
    } else {
        rows.div_ceil(rows_per_seq)
    };
    inputs.mask.validate("mask", rows)?;
    let row_inputs = inputs.row_inputs();
    let (advantages, per_token) = (row_inputs.advantages, row_inputs.per_token_advantages);
    advantages.validate("advantages", if per_token { rows } else { seqs })?;
    if let Some(v) = &inputs.old_logprobs {
        v.validate("old_logprobs", rows)?;
    }
    if let Some(v) = &inputs.ref_logprobs {
        v.validate("ref_logprobs", rows)?;
    }
    if cfg.kl_coef != 0.0 && inputs.ref_logprobs.is_none() {
        return Err(Error::arg("ref_logprobs", "required when kl_coef is not 0"));
    }
    // the sampler's log-probs serve the rollout correction alone
    let rollout = match (cfg.rollout_correction, part.rollout_logprobs) {
        (Some(_), None) => {
            return Err(Error::arg(
                "rollout_logprobs",
                "required by the rollout correction (rollout_correction is set)",
            ))
        }
        (Some(_), Some(v)) => {
            v.validate("rollout_logprobs", rows)?;
            Some(v)
        }
        (None, _) => None,
    };
    let grad = match gradient {
        Gradient::None => GradDest::None,
        Gradient::Into(g) => {
            let view = LogitsView {
                buffer: g.buffer,
                dtype: g.dtype,
                rows,
                vocab: logits.vocab,
                layout: g.layout,
            };
            view.validate().map_err(|e| rename(e, "gradient"))?;
            if std::ptr::eq(g.buffer, logits.buffer) || *g.buffer == *logits.buffer {
                beside_logits(logits, &g)?
            } else {
                GradDest::Separate {
                    buffer: g.buffer,
                    dtype: g.dtype,
                    layout: g.layout,
                }
            }
        }
        Gradient::InPlace => GradDest::InPlace,
    };
    let mut reads = vec![
        ("targets", inputs.targets.buffer),
        ("mask", inputs.mask.buffer),
        ("advantages", advantages.buffer),
    ];
    reads.extend(inputs.old_logprobs.map(|v| ("old_logprobs", v.buffer)));
    reads.extend(inputs.ref_logprobs.map(|v| ("ref_logprobs", v.buffer)));
    reads.extend(rollout.map(|v| ("rollout_logprobs", v.buffer)));
    let mut writes = Vec::new();
    if let Some(outputs) = outputs {
        writes.push(("outputs.metrics", outputs.metrics.buffer));
        writes.extend(outputs.logprobs.map(|v| ("outputs.logprobs", v.buffer)));
        writes.extend(outputs.entropy.map(|v| ("outputs.entropy", v.buffer)));
    }
    reads.push(("logits", logits.buffer));
    match &grad {
        GradDest::Separate { buffer, .. } => writes.push(("gradient", buffer)),
        // in place the logits are written too: no other input or output may share them
        GradDest::InPlace | GradDest::Beside { .. } => writes.push(("logits", logits.buffer)),
        GradDest::None => {}
    }
    crate::view::check_aliasing(&reads, &writes)?;
    // every element of a written tensor belongs to one row
    let written = match &grad {
        GradDest::Separate { layout, .. } => Some(("gradient", layout)),
        GradDest::InPlace => Some(("logits", &logits.layout)),
        GradDest::Beside { layout } => Some(("gradient", layout)),
        GradDest::None => None,
    };
    if let Some((arg, layout)) = written {
        if layout.rows_overlap(rows, logits.vocab as u64) {
            return Err(Error::arg(
                arg,
                "rows overlap, so a gradient element would belong to two rows; \
                 write the gradient into a buffer with disjoint rows",
            ));
        }
    }
    let mut row_flags = 0;
    if inputs.old_logprobs.is_some() {
        row_flags |= HAS_OLD;
    }
    if inputs.ref_logprobs.is_some() {
        row_flags |= HAS_REF;
    }
    Ok(PartPlan {
        logits: *logits,
        targets: inputs.targets,
        rows: PartRows {
            inputs: RowInputs {
                rollout_logp: rollout,
                ..row_inputs
            },
            rows,
            rows_per_seq,
            seqs,
            part_row: rows_before,
            part_seq: seqs_before,
        },
        grad,
        row_flags,
    })
}

/// Bytes `[begin, end)` of a buffer that a part reads or writes, by argument.
type Span<'a> = (&'static str, &'a wgpu::Buffer, u64, u64);

/// What part `p` reads and what it writes, as byte ranges.
fn part_spans<'a>(p: &PartPlan<'a>) -> (Vec<Span<'a>>, Vec<Span<'a>>) {
    let rows = p.rows.rows as u64;
    let tensor = |arg, buffer, layout: &RowLayout, width: u64, elem: u64| -> Span<'a> {
        let (lo, hi) = layout.span(rows, width);
        (arg, buffer, lo * elem, hi * elem)
    };
    let vector = |arg, v: &F32View<'a>, len: u64| -> Span<'a> {
        (arg, v.buffer, v.offset, v.offset + len * 4)
    };
    let vocab = p.logits.vocab as u64;
    let logits = tensor(
        "logits",
        p.logits.buffer,
        &p.logits.layout,
        vocab,
        p.logits.dtype.size(),
    );
    let i = &p.rows.inputs;
    let adv_len = if i.per_token_advantages {
        rows
    } else {
        p.rows.seqs as u64
    };
    let mut reads = vec![
        logits,
        tensor("targets", p.targets.buffer, &p.targets.layout, 1, 4),
        vector("mask", &i.mask, rows),
        vector("advantages", &i.advantages, adv_len),
    ];
    reads.extend(i.old_logp.map(|v| vector("old_logprobs", &v, rows)));
    reads.extend(i.ref_logp.map(|v| vector("ref_logprobs", &v, rows)));
    reads.extend(i.rollout_logp.map(|v| vector("rollout_logprobs", &v, rows)));
    let writes = match &p.grad {
        GradDest::None => vec![],
        GradDest::InPlace => vec![logits],
        GradDest::Separate {
            buffer,
            dtype,
            layout,
        } => vec![tensor("gradient", buffer, layout, vocab, dtype.size())],
        GradDest::Beside { layout } => vec![tensor(
            "gradient",
            p.logits.buffer,
            layout,
            vocab,
            p.logits.dtype.size(),
        )],
    };
    (reads, writes)
}

/// What one part writes must not overlap what another part reads or writes: the parts
/// run one after the other, and a gradient written over another part's inputs would be
/// read back as input. Parts may share a buffer at disjoint ranges (micro-batches that
/// an allocator put in one page).
fn check_parts_apart(parts: &[PartPlan<'_>]) -> Result<()> {
    let spans: Vec<_> = parts.iter().map(part_spans).collect();
    for (i, (_, writes)) in spans.iter().enumerate() {
        for (j, (reads, other_writes)) in spans.iter().enumerate() {
            if i == j {
                continue;
            }
            for &(w, wb, w0, w1) in writes {
                for &(r, rb, r0, r1) in reads.iter().chain(other_writes) {
                    if *wb == *rb && w0 < r1 && r0 < w1 {
                        return Err(Error::arg(
                            w,
                            format!(
                                "(part {i}) is written over bytes {w0}..{w1} of a buffer that \
                                 part {j} uses for `{r}` (bytes {r0}..{r1}); parts need \
                                 disjoint ranges"
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Re-labels a view error for the gradient buffer.
fn rename(e: Error, arg: &'static str) -> Error {
    match e {
        Error::InvalidArgument { reason, .. } => Error::InvalidArgument { arg, reason },
        other => other,
    }
}

/// A gradient view into the logits' own buffer. Allocators that suballocate (CubeCL,
/// hence Burn, puts many tensors in one page) hand out such pairs. wgpu forbids binding
/// one buffer read-only and read-write in the same dispatch, so the row kernel binds
/// it once, read-write, as it does in place: the two must share a dtype and not overlap.
fn beside_logits<'a>(logits: &LogitsView<'_>, g: &GradView<'a>) -> Result<GradDest<'a>> {
    let width = logits.vocab as u64;
    let (xl, xh) = logits.layout.span(logits.rows as u64, width);
    let (gl, gh) = g.layout.span(logits.rows as u64, width);
    if g.layout == logits.layout {
        return Err(Error::arg(
            "gradient",
            "is the logits themselves: use Gradient::InPlace to overwrite the logits",
        ));
    }
    if g.dtype != logits.dtype {
        return Err(Error::arg(
            "gradient",
            format!(
                "shares the logits buffer, so it must have their dtype ({}), not {}",
                logits.dtype, g.dtype
            ),
        ));
    }
    if logits.rows > 0 && gl < xh && xl < gh {
        return Err(Error::arg(
            "gradient",
            format!(
                "overlaps the logits in their shared buffer (elements {gl}..{gh} and \
                 {xl}..{xh}); use Gradient::InPlace to overwrite the logits"
            ),
        ));
    }
    Ok(GradDest::Beside { layout: g.layout })
}
