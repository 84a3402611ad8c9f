//! Validating a call before anything is recorded: every view against its rows, the
//! parts against each other (same vocabulary and optional inputs, disjoint writes), the
//! outputs, and each part laid out in the scratch buffers after the parts before it.
//! The result, a [`Plan`], holds the call's schedule. Planning records nothing.

use super::inputs::{check_kept, check_temperatures};
use super::schedule::{schedule, CallShape, HeadShape, Schedule};
use super::shards::ShardCall;
use super::{GradView, Gradient, LossOutputs, LossPart, PolicyLoss};
use crate::config::LossConfig;
use crate::error::{Error, Result};
use crate::kernels::policy_loss::{self, GradDest};
use crate::kernels::prepare::{PartRows, RowInputs, HAS_OLD, HAS_REF};
use crate::kernels::reduce::METRICS;
use crate::kernels::{column_blocks, Caps, ColumnBlock, PartSpans};
use crate::view::{F32View, LogitsView, RowLayout};

/// A validated call: its parts, where each part's rows and sequences start in the
/// scratch buffers, the totals the weights need, and its schedule.
pub(super) struct Plan<'a> {
    pub parts: Vec<PartPlan<'a>>,
    pub rows: u32,
    pub seqs: u32,
    pub l_norm: f32,
    pub has_old: bool,
    /// The column blocks of every row (one, the whole row, unless a row is longer than
    /// one binding or one lane's loops allow).
    pub cols: Vec<ColumnBlock>,
    /// The parts' first column in the whole vocabulary, and its size (a shard's).
    pub col_offset: u32,
    pub vocab_total: u32,
    pub schedule: Schedule,
}

impl Plan<'_> {
    /// The given kept ids of every part.
    pub(super) fn kept_ids(&self) -> u64 {
        let ids = |p: &PartPlan<'_>| p.rows.inputs.kept.map_or(0, |k| k.len as u64);
        self.parts.iter().map(ids).sum()
    }

    /// Where part `i`'s kept pairs start in the kept scratch: after every row's header
    /// and the earlier parts' pairs.
    pub(super) fn kept_pairs(&self, i: usize) -> u64 {
        let ids = |p: &PartPlan<'_>| p.rows.inputs.kept.map_or(0, |k| k.len as u64);
        crate::kernels::kept_partials::scratch_items(self.rows, 0)
            + self.parts[..i].iter().map(ids).sum::<u64>()
    }
}

/// One validated part.
pub(super) struct PartPlan<'a> {
    pub logits: LogitsView<'a>,
    pub targets: crate::view::TargetsView<'a>,
    pub rows: PartRows<'a>,
    pub grad: GradDest<'a>,
    pub row_flags: u32,
}

impl PartPlan<'_> {
    /// The tensors the row kernel binds, for splitting rows into column blocks.
    pub(super) fn spans(&self) -> PartSpans {
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

impl PolicyLoss {
    /// Validates a call (with its outputs, unless `None`), lays its parts out in the
    /// scratch buffers and schedules its launches; records nothing.
    pub(super) fn plan<'a>(
        &self,
        parts: &[LossPart<'a>],
        outputs: Option<&LossOutputs<'_>>,
        shard: Option<&ShardCall<'_>>,
    ) -> Result<Plan<'a>> {
        self.plan_with(parts, outputs, shard, None)
    }

    /// [`PolicyLoss::plan`], or with `head` that of the fused head, whose part's
    /// logits are a chunk buffer that holds `head`'s chunks one at a time (its view
    /// names every row, so it is not checked against the buffer).
    pub(super) fn plan_with<'a>(
        &self,
        parts: &[LossPart<'a>],
        outputs: Option<&LossOutputs<'_>>,
        shard: Option<&ShardCall<'_>>,
        head: Option<&HeadShape>,
    ) -> Result<Plan<'a>> {
        let Some(first) = parts.first().map(|p| &p.inputs) else {
            return Err(Error::arg(
                "parts",
                "is empty: a call needs at least one part",
            ));
        };
        if shard.is_some() && first.kept.is_none() {
            super::inputs::computed_on_whole_rows(&self.config)?;
        }
        let mut plan = Plan {
            parts: Vec::with_capacity(parts.len()),
            rows: 0,
            seqs: 0,
            l_norm: 1.0,
            has_old: first.old_logprobs.is_some(),
            cols: Vec::new(),
            col_offset: shard.map_or(0, |s| s.col_offset),
            vocab_total: shard.map_or(first.logits.vocab, |s| s.vocab),
            schedule: Schedule::default(),
        };
        let mut longest = 1;
        for (i, lp) in parts.iter().enumerate() {
            let part = plan_part(&self.config, lp, outputs, (plan.rows, plan.seqs), head)
                .and_then(|p| like_first(lp, parts[0].inputs).map(|()| p))
                .map_err(|e| in_part(e, i, parts.len() > 1))?;
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
        for p in &mut plan.parts {
            p.rows.inputs.primitive = self.primitive;
        }
        if let Some(outputs) = outputs {
            check_outputs(outputs, plan.rows)?;
        }
        check_parts_apart(&plan.parts)?;
        if let Some(s) = shard {
            check_gathered(s, &plan, outputs)?;
        }
        let caps = Caps::of(&self.ctx);
        let spans: Vec<PartSpans> = plan.parts.iter().map(PartPlan::spans).collect();
        plan.cols = column_blocks(&caps, first.logits.vocab, &spans)?;
        if let (Some(option), true) = (self.config.kept_option(), plan.cols.len() > 1) {
            return Err(Error::arg(
                option,
                format!(
                    "a kept set computed by the kernels (top-k, top-p, min-p) needs each row \
                     in one binding; rows of {} columns take {} on this device: give the \
                     sampler's kept set (keep_offsets, keep_ids)",
                    first.logits.vocab,
                    plan.cols.len()
                ),
            ));
        }
        let call = CallShape {
            parts: &spans,
            cols: &plan.cols,
            has_old: plan.has_old,
            shards: shard.map(|s| s.starts.len() - 1),
            head,
            kept: first.kept.map(|_| plan.kept_ids()),
            computed: self.config.computes_kept_set(),
        };
        plan.schedule = schedule(&self.config, &call, &caps)?;
        Ok(plan)
    }
}

/// `Err` unless part `lp` has part 0's vocabulary and optional inputs.
fn like_first(lp: &LossPart<'_>, first: super::LossInputs<'_>) -> Result<()> {
    let inputs = &lp.inputs;
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
        (
            "old_logprobs",
            inputs.old_logprobs.is_some(),
            first.old_logprobs.is_some(),
        ),
        (
            "ref_logprobs",
            inputs.ref_logprobs.is_some(),
            first.ref_logprobs.is_some(),
        ),
        (
            "temperatures",
            inputs.temperatures.is_some(),
            first.temperatures.is_some(),
        ),
        ("keep_offsets", inputs.kept.is_some(), first.kept.is_some()),
    ] {
        if here != there {
            return Err(Error::arg(
                arg,
                "given for some parts and not others: give them for every part or none",
            ));
        }
    }
    Ok(())
}

fn check_outputs(outputs: &LossOutputs<'_>, rows: u32) -> Result<()> {
    outputs
        .metrics
        .validate("outputs.metrics", METRICS as u32)?;
    if let Some(v) = &outputs.logprobs {
        v.validate("outputs.logprobs", rows)?;
    }
    if let Some(v) = &outputs.entropy {
        v.validate("outputs.entropy", rows)?;
    }
    if let Some(v) = &outputs.lse {
        v.validate("outputs.lse", rows)?;
    }
    Ok(())
}

/// A shard call's gathered partials: long enough, and written by nothing of the call.
fn check_gathered(
    s: &ShardCall<'_>,
    plan: &Plan<'_>,
    outputs: Option<&LossOutputs<'_>>,
) -> Result<()> {
    let len = (s.starts.len() - 1) as u64 * plan.rows as u64 * 4;
    let len = u32::try_from(len)
        .map_err(|_| Error::arg("gathered", "holds more than 2^32 - 1 values"))?;
    s.gathered.validate("gathered", len)?;
    let mut writes = vec![("outputs.metrics", outputs.map(|o| o.metrics.buffer))];
    if let Some(o) = outputs {
        writes.push(("outputs.logprobs", o.logprobs.map(|v| v.buffer)));
        writes.push(("outputs.entropy", o.entropy.map(|v| v.buffer)));
        writes.push(("outputs.lse", o.lse.map(|v| v.buffer)));
    }
    for p in &plan.parts {
        writes.push(match &p.grad {
            GradDest::Separate { buffer, .. } => ("gradient", Some(*buffer)),
            GradDest::InPlace | GradDest::Beside { .. } => ("logits", Some(p.logits.buffer)),
            GradDest::None => ("gradient", None),
        });
    }
    let writes: Vec<_> = writes
        .into_iter()
        .filter_map(|(a, b)| b.map(|b| (a, b)))
        .collect();
    crate::view::check_aliasing(&[("gathered", s.gathered.buffer)], &writes)
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
/// part out after `rows_before` rows and `seqs_before` sequences of earlier parts (the
/// head's part: its logits are the chunk buffer, not checked as a view).
fn plan_part<'a>(
    cfg: &LossConfig,
    part: &LossPart<'a>,
    outputs: Option<&LossOutputs<'_>>,
    (rows_before, seqs_before): (u32, u32),
    head: Option<&HeadShape>,
) -> Result<PartPlan<'a>> {
    let inputs = &part.inputs;
    let logits = &inputs.logits;
    if head.is_none() {
        logits.validate()?;
    }
    let rows = logits.rows;
    inputs.targets.validate(rows)?;
    let rows_per_seq = logits.layout.rows_per_seq.min(rows).max(1);
    let seqs = if rows == 0 {
        0
    } else {
        rows.div_ceil(rows_per_seq)
    };
    let row_inputs = row_inputs(cfg, part, rows, seqs)?;
    let grad = grad_dest(part.gradient, logits)?;
    check_part_aliasing(part, &row_inputs, outputs, &grad)?;
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
            inputs: row_inputs,
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

/// The part's per-row inputs, each validated against its `rows` (and `seqs`), with the
/// sampler's log-probs where the rollout correction needs them.
fn row_inputs<'a>(
    cfg: &LossConfig,
    part: &LossPart<'a>,
    rows: u32,
    seqs: u32,
) -> Result<RowInputs<'a>> {
    let inputs = &part.inputs;
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
    if let Some(v) = &inputs.temperatures {
        check_temperatures(cfg)?;
        v.validate("temperatures", rows)?;
    }
    if let Some(k) = &inputs.kept {
        check_kept(cfg)?;
        k.validate(rows)?;
    }
    cfg.check_optional_inputs(
        inputs.ref_logprobs.is_some(),
        part.rollout_logprobs.is_some(),
    )?;
    // the sampler's log-probs serve the rollout correction and the off-policy mask
    let rollout = match part.rollout_logprobs {
        Some(v) if cfg.reads_rollout_logp() => {
            v.validate("rollout_logprobs", rows)?;
            Some(v)
        }
        _ => None,
    };
    Ok(RowInputs {
        rollout_logp: rollout,
        ..row_inputs
    })
}

/// Where the gradient goes, validated against the logits.
fn grad_dest<'a>(gradient: Gradient<'a>, logits: &LogitsView<'_>) -> Result<GradDest<'a>> {
    Ok(match gradient {
        Gradient::None => GradDest::None,
        Gradient::Into(g) => {
            let view = LogitsView {
                buffer: g.buffer,
                dtype: g.dtype,
                rows: logits.rows,
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
    })
}

/// No buffer the part writes is one it reads, and every element of a written tensor
/// belongs to one row.
fn check_part_aliasing(
    part: &LossPart<'_>,
    row_inputs: &RowInputs<'_>,
    outputs: Option<&LossOutputs<'_>>,
    grad: &GradDest<'_>,
) -> Result<()> {
    let inputs = &part.inputs;
    let logits = &inputs.logits;
    let mut reads = vec![
        ("targets", inputs.targets.buffer),
        ("mask", inputs.mask.buffer),
        ("advantages", row_inputs.advantages.buffer),
    ];
    reads.extend(inputs.old_logprobs.map(|v| ("old_logprobs", v.buffer)));
    reads.extend(inputs.ref_logprobs.map(|v| ("ref_logprobs", v.buffer)));
    reads.extend(
        row_inputs
            .rollout_logp
            .map(|v| ("rollout_logprobs", v.buffer)),
    );
    reads.extend(inputs.temperatures.map(|v| ("temperatures", v.buffer)));
    if let Some(k) = &inputs.kept {
        reads.push(("keep_offsets", k.offsets));
        reads.push(("keep_ids", k.ids));
    }
    let mut writes = Vec::new();
    if let Some(outputs) = outputs {
        writes.push(("outputs.metrics", outputs.metrics.buffer));
        writes.extend(outputs.logprobs.map(|v| ("outputs.logprobs", v.buffer)));
        writes.extend(outputs.entropy.map(|v| ("outputs.entropy", v.buffer)));
        writes.extend(outputs.lse.map(|v| ("outputs.lse", v.buffer)));
    }
    reads.push(("logits", logits.buffer));
    match grad {
        GradDest::Separate { buffer, .. } => writes.push(("gradient", buffer)),
        // in place the logits are written too: no other input or output may share them
        GradDest::InPlace | GradDest::Beside { .. } => writes.push(("logits", logits.buffer)),
        GradDest::None => {}
    }
    crate::view::check_aliasing(&reads, &writes)?;
    let written = match grad {
        GradDest::Separate { layout, .. } => Some(("gradient", layout)),
        GradDest::InPlace => Some(("logits", &logits.layout)),
        GradDest::Beside { layout } => Some(("gradient", layout)),
        GradDest::None => None,
    };
    if let Some((arg, layout)) = written {
        if layout.rows_overlap(logits.rows, logits.vocab as u64) {
            return Err(Error::arg(
                arg,
                "rows overlap, so a gradient element would belong to two rows; \
                 write the gradient into a buffer with disjoint rows",
            ));
        }
    }
    Ok(())
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
    reads.extend(i.temperatures.map(|v| vector("temperatures", &v, rows)));
    if let Some(k) = &i.kept {
        let (o, d) = (k.offsets_at, k.ids_at);
        reads.push(("keep_offsets", k.offsets, o, o + (rows + 1) * 4));
        reads.push(("keep_ids", k.ids, d, d + k.len as u64 * 4));
    }
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

/// Re-labels a view error with the argument it is about (the gradient buffer, the
/// head's matrices).
pub(super) fn rename(e: Error, arg: &'static str) -> Error {
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
