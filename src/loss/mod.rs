//! The policy loss: a call validated into a [`validate::Plan`] (its parts laid out in
//! the scratch, its launches scheduled by [`schedule`]), then recorded into the caller's
//! encoder by [`encode`], leaving the loss, metrics, per-row outputs and the gradient on
//! the device. [`schedule`] is the one place that knows the order of kernels in a step.
//!
//! Scratch is O(rows): see [`PolicyLoss::scratch_bytes`]. It is owned by the
//! `PolicyLoss` and reused from call to call.

mod encode;
mod head;
mod inputs;
mod kept;
mod metrics;
mod primitive;
pub(crate) mod schedule;
mod shards;
mod validate;
pub(crate) use inputs::{check_kept, check_temperatures};

use std::sync::Mutex;

pub use head::{HeadGradients, HeadInputs, MatrixView, VocabBlocks};
pub use inputs::{Advantages, GradView, Gradient, LossBuffers, LossInputs, LossOutputs, LossPart};
pub use metrics::{InvalidInput, Metrics};
pub use primitive::{LogProbConfig, LogProbHeadInputs, LogProbInputs, LogProbs, Upstream};

use crate::config::LossConfig;
use crate::context::Context;
use crate::error::Result;
use crate::kernels::{column_blocks, Caps, PartSpans};
use crate::view::{DType, RowLayout};
use encode::Scratch;
use schedule::{schedule, CallShape, HeadShape, PartShape, Schedule};

/// A configured policy loss on one device: the entry point for logits already in device
/// buffers. [`PolicyLoss::new`] checks the [`LossConfig`] once; each
/// [`record`](PolicyLoss::record) (or [`record_parts`](PolicyLoss::record_parts),
/// [`record_head`](PolicyLoss::record_head)) then checks the views and records the whole
/// step (loss, metrics, per-row outputs and, if asked, ∂Loss/∂logits) into the caller's
/// command encoder, reading nothing back. Its O(rows) scratch is allocated on first use
/// and reused by later calls; the pipelines are the [`Context`]'s, shared.
pub struct PolicyLoss {
    ctx: Context,
    config: LossConfig,
    scratch: Mutex<Scratch>,
    /// The log-prob primitive's calls ([`LogProbs`]) rather than a loss's.
    pub(crate) primitive: bool,
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
    /// The loss `config` on `ctx`'s device; an `Err` naming the first bad field
    /// ([`LossConfig::validate`]). Builds no pipeline and allocates nothing yet.
    pub fn new(ctx: &Context, config: LossConfig) -> Result<Self> {
        config.validate()?;
        Ok(PolicyLoss {
            ctx: ctx.clone(),
            config,
            scratch: Mutex::new(Scratch::default()),
            primitive: false,
        })
    }

    /// The configuration every call computes.
    pub fn config(&self) -> &LossConfig {
        &self.config
    }

    /// The device the calls are recorded for.
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

    /// The schedule of a call of parts of these shapes, before the call.
    pub(super) fn schedule_for(
        &self,
        parts: &[PartShape],
        head: Option<&HeadShape>,
    ) -> Result<Schedule> {
        let caps = Caps::of(&self.ctx);
        let spans: Vec<PartSpans> = parts.iter().map(PartShape::spans).collect();
        let vocab = parts.first().map_or(1, |p| p.vocab);
        let cols = column_blocks(&caps, vocab, &spans)?;
        let call = CallShape {
            parts: &spans,
            cols: &cols,
            has_old: parts.first().is_some_and(|p| p.has_old),
            shards: None,
            head,
            kept: None,
            computed: self.config.computes_kept_set(),
        };
        schedule(&self.config, &call, &caps)
    }

    fn scratch_for(&self, parts: &[PartShape]) -> Result<u64> {
        Ok(self.schedule_for(parts, None)?.bytes())
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
        let one_row = PartShape {
            rows: 1,
            layout: RowLayout::default(),
            vocab: 1,
            dtype: DType::F32,
            targets: RowLayout::default(),
            grad: None,
            has_old,
        };
        self.schedule_for(&[one_row], None)
            .expect("one row of one column fits every device")
            .launches
            .len()
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
        self.encode(encoder, &plan, outputs, None, None)
    }
}
