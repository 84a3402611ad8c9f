//! Recording a planned call: the scratch buffers grown to the plan's size, then each
//! launch of its schedule in order. Nothing here decides what runs; the schedule did.

use super::head::HeadCall;
use super::schedule::{
    Step, KEPT_ITEM_BYTES, ROWAUX_BYTES, ROWIN_BYTES, ROWOUT_BYTES, SEQINFO_BYTES, SPARE_BYTES,
};
use super::shards::ShardCall;
use super::validate::{PartPlan, Plan};
use super::{LossOutputs, PolicyLoss};
use crate::config::PolicyLossMode;
use crate::error::{Error, Result};
use crate::kernels::combine::{CombineOut, Gathered};
use crate::kernels::kept_partials::{self, KeptCall};
use crate::kernels::policy_loss::{
    GradDest, RowCall, HAS_ROLLOUT, HAS_SELECTION, PRIMITIVE, RENORMALIZE,
};
use crate::kernels::prepare::{AllSeqs, HAS_OLD, HAS_REF};
use crate::kernels::row_partials::{PartialsOut, Sampler};
use crate::kernels::{
    combine, policy_loss, prepare, reduce, row_partials, select, seq_terms, ColumnBlock,
    ScratchBufs,
};
use crate::shards::PARTIAL_BYTES;
use crate::view::{F32View, LogitsView, RowLayout, TargetsView};

/// O(rows) buffers reused from call to call, each grown (never shrunk) on its own.
#[derive(Default)]
pub(super) struct Scratch {
    rowin: Option<(u32, wgpu::Buffer)>,
    rowout: Option<(u32, wgpu::Buffer)>,
    seqinfo: Option<(u32, wgpu::Buffer)>,
    /// select.wgsl's per-row results, made only for the calls that need them.
    rowaux: Option<(u32, wgpu::Buffer)>,
    /// Bound where the caller wants no per-row output.
    spare: Option<(u32, wgpu::Buffer)>,
    /// Partial statistics of column blocks, for rows longer than one binding.
    pub(super) partials: Option<(u32, wgpu::Buffer)>,
    /// Given kept sets' row headers and kept pairs (kept_partials.wgsl).
    pub(super) kept: Option<(u32, wgpu::Buffer)>,
    /// The fused head's chunk buffers.
    pub(super) head: super::head::HeadScratch,
}

/// What every launch of one call shares.
pub(super) struct Encoding<'e> {
    pub(super) loss: &'e PolicyLoss,
    pub(super) plan: &'e Plan<'e>,
    pub(super) bufs: ScratchBufs<'e>,
    /// The column-block partials, where the rows are split.
    pub(super) partials: Option<Gathered<'e>>,
    pub(super) shard: Option<&'e ShardCall<'e>>,
    pub(super) head: Option<&'e HeadCall<'e>>,
    /// Row flags beside each part's own: which of select's results to read.
    pub(super) flags: u32,
    /// The kept scratch, where kept sets are given.
    pub(super) kept: Option<&'e wgpu::Buffer>,
}

impl PolicyLoss {
    /// Records a planned call, its schedule's launches in order.
    pub(super) fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        plan: &Plan<'_>,
        outputs: &LossOutputs<'_>,
        shard: Option<&ShardCall<'_>>,
        head: Option<&HeadCall<'_>>,
    ) -> Result<()> {
        self.fits_scratch(plan)?;
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let scratch = &mut *guard;
        let layout = plan.schedule.scratch;
        let partials = match layout.partials {
            0 => None,
            n => Some(self.partials_binding(&mut scratch.partials, n, plan.rows)?),
        };
        let (rows, seqs) = (plan.rows, plan.seqs);
        let rowin = grow(self, &mut scratch.rowin, "rowin", rows, ROWIN_BYTES);
        let rowout = grow(self, &mut scratch.rowout, "rowout", rows, ROWOUT_BYTES);
        let seqinfo = grow(self, &mut scratch.seqinfo, "seqinfo", seqs, SEQINFO_BYTES);
        let spare = grow(self, &mut scratch.spare, "spare", 1, SPARE_BYTES);
        // select's per-row results, where there are any (else the spare stands in)
        let rowaux = match layout.rowaux {
            false => spare,
            true => grow(self, &mut scratch.rowaux, "rowaux", rows, ROWAUX_BYTES),
        };
        let kept = match layout.kept {
            0 => None,
            n => {
                let n = u32::try_from(n).map_err(|_| {
                    Error::arg(
                        "keep_ids",
                        format!("{n} kept ids and row headers are too many"),
                    )
                })?;
                Some(grow(self, &mut scratch.kept, "kept", n, KEPT_ITEM_BYTES))
            }
        };
        let e = Encoding {
            kept,
            loss: self,
            plan,
            bufs: ScratchBufs {
                rowin,
                seqinfo,
                rowout,
                rowaux,
                spare,
            },
            partials,
            shard,
            head,
            flags: row_flags(self, layout.rowaux),
        };
        for step in plan.schedule.steps() {
            e.launch(encoder, step, outputs)?;
        }
        Ok(())
    }

    /// Records `prepare` alone, for the benchmarks' stage times (`bench --stages`):
    /// the per-row inputs gathered and the sequences' weights, as
    /// [`PolicyLoss::record_parts`] does first.
    #[cfg(feature = "tools")]
    pub(crate) fn record_prepare<'a, P: Copy + Into<super::LossPart<'a>>>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        parts: &[P],
    ) -> Result<()> {
        let parts: Vec<super::LossPart<'a>> = parts.iter().map(|&p| p.into()).collect();
        let plan = self.plan(&parts, None, None)?;
        self.fits_scratch(&plan)?;
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let scratch = &mut *guard;
        let rowin = grow(self, &mut scratch.rowin, "rowin", plan.rows, ROWIN_BYTES);
        let seqinfo = grow(
            self,
            &mut scratch.seqinfo,
            "seqinfo",
            plan.seqs,
            SEQINFO_BYTES,
        );
        let spare = grow(self, &mut scratch.spare, "spare", 1, SPARE_BYTES);
        let bufs = ScratchBufs {
            rowin,
            seqinfo,
            rowout: spare,
            rowaux: spare,
            spare,
        };
        for step in plan.schedule.steps() {
            if let Step::Prepare { part, phase } = step {
                let all = all_seqs(&plan);
                let p = &plan.parts[part].rows;
                prepare::record(&self.ctx, encoder, &self.config, p, phase, all, &bufs)?;
            }
        }
        Ok(())
    }

    /// The scratch partials of `n` 16-byte items (column blocks of `stride` rows each),
    /// as combine reads them.
    /// `Err` where a buffer of the O(rows) scratch `plan` needs would be larger than
    /// the device's largest (tens of millions of rows), before any is grown.
    fn fits_scratch(&self, plan: &Plan<'_>) -> Result<()> {
        let layout = plan.schedule.scratch;
        let (rows, seqs) = (plan.rows as u64, plan.seqs as u64);
        for (what, n, bytes) in [
            ("rows", rows, ROWIN_BYTES.max(ROWOUT_BYTES)),
            ("rows", rows, if layout.rowaux { ROWAUX_BYTES } else { 0 }),
            ("sequences", seqs, SEQINFO_BYTES),
            ("column-block partials", layout.partials, PARTIAL_BYTES),
            ("kept ids and row headers", layout.kept, KEPT_ITEM_BYTES),
        ] {
            let what = format!("the scratch of {n} {what} ({bytes} bytes each)");
            self.ctx.fits_buffer("logits", &what, n * bytes)?;
        }
        Ok(())
    }

    pub(super) fn partials_binding<'s>(
        &self,
        slot: &'s mut Option<(u32, wgpu::Buffer)>,
        n: u64,
        stride: u32,
    ) -> Result<Gathered<'s>> {
        let limits = self.ctx.device().limits();
        let items = u32::try_from(n).map_err(|_| {
            Error::arg(
                "logits",
                format!("{n} partials of column blocks are too many"),
            )
        })?;
        let buffer = grow(self, slot, "partials", items, PARTIAL_BYTES);
        let (binding, _) =
            crate::kernels::storage_window("logits", buffer, 0, n, PARTIAL_BYTES, &limits)?;
        Ok(Gathered {
            binding,
            offset: 0,
            stride,
        })
    }

    /// The sampler's map of a part's rows: the softcap, and its per-row temperatures.
    pub(super) fn sampler<'b>(&self, temps: Option<F32View<'b>>) -> Result<Sampler<'b>> {
        Ok(Sampler {
            inv_tau: crate::kernels::row_stats::check_temperature(self.config.temperature)?,
            softcap: self.config.logit_softcap.unwrap_or(0.0),
            temps,
        })
    }

    /// The partials of column block `(col, w)` of `logits` (columns `col_offset ..` of
    /// the whole vocabulary) into item `offset ..` of `out`.
    pub(super) fn record_block_partials(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (logits, targets): (&LogitsView<'_>, &TargetsView<'_>),
        (col, w): ColumnBlock,
        col_offset: u32,
        out: PartialsOut<'_>,
        sampler: Sampler<'_>,
    ) -> Result<()> {
        let block = block_view(logits, col, w);
        row_partials::record(
            &self.ctx,
            encoder,
            &block,
            targets,
            &sampler,
            col_offset + col,
            &out,
        )
    }
}

impl Encoding<'_> {
    fn launch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        step: Step,
        outputs: &LossOutputs<'_>,
    ) -> Result<()> {
        let (ctx, cfg, plan) = (&self.loss.ctx, &self.loss.config, self.plan);
        let part = |i: usize| &plan.parts[i];
        match step {
            Step::Prepare { part: i, phase } => {
                let all = all_seqs(plan);
                prepare::record(ctx, encoder, cfg, &part(i).rows, phase, all, &self.bufs)
            }
            Step::Row {
                part: i,
                block,
                phase,
            } => self.row(encoder, part(i), plan.cols[block], phase),
            Step::BlockPartials { part: i, block } => self.block_partials(encoder, i, block),
            Step::CombineBlocks { part: i } => self.combine_blocks(encoder, part(i)),
            Step::CombineShards { part: i } => self.combine_shards(encoder, part(i)),
            Step::SeqTerms { part: i } => {
                seq_terms::record(ctx, encoder, cfg, &part(i).rows, plan.seqs, &self.bufs)
            }
            Step::Select { part: i, phases } => {
                let totals = select::Totals {
                    rows: plan.rows,
                    seqs: plan.seqs,
                    l_norm: plan.l_norm,
                    has_old: plan.has_old,
                };
                select::record(ctx, encoder, cfg, &part(i).rows, totals, phases, &self.bufs)
            }
            Step::Reduce => self.reduce(encoder, outputs),
            Step::HeadLogits { chunk } => self.head().logits(self.loss, encoder, &self.bufs, chunk),
            Step::HeadRow { chunk, phase } => {
                let call = (plan, self.bufs, self.flags, self.kept);
                self.head().row(self.loss, encoder, call, chunk, phase)
            }
            Step::HeadKept { chunk } => self.head_kept(encoder, chunk),
            Step::KeptSelect { part: i } => self.kept_select(encoder, part(i), None),
            Step::HeadKeptSelect { chunk } => {
                let p = part(0);
                let rows = self.head().head.shape.chunks[chunk];
                let limits = ctx.device().limits();
                let chunk = policy_loss::head_chunk(&p.logits, rows, &limits)?;
                self.kept_select(encoder, p, Some(chunk))
            }
            Step::HeadGrad { chunk } => self.head().grads(self.loss, encoder, &self.bufs, chunk),
            Step::HeadFinish => self.head().finish(self.loss, encoder, &self.bufs),
        }
    }

    pub(super) fn head(&self) -> &HeadCall<'_> {
        self.head
            .expect("the schedule has head steps only in a head call")
    }

    /// The row kernel over column block `(col, w)` of part `p`.
    fn row(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &PartPlan<'_>,
        (col, w): ColumnBlock,
        phase: u32,
    ) -> Result<()> {
        let (logits, grad) = (block_view(&p.logits, col, w), block_grad(&p.grad, col));
        let call = RowCall {
            config: &self.loss.config,
            logits: &logits,
            targets: &p.targets,
            rows_per_seq: p.rows.rows_per_seq,
            row_flags: p.row_flags | self.flags,
            part_row: p.rows.part_row,
            part_seq: p.rows.part_seq,
            grad: &grad,
            scratch: self.bufs,
            col_offset: self.plan.col_offset + col,
            vocab_total: self.plan.vocab_total,
            chunk: None,
            temps: p.rows.inputs.temperatures,
            kept: self.kept,
        };
        policy_loss::record(&self.loss.ctx, encoder, &call, phase)
    }

    fn block_partials(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        part: usize,
        block: usize,
    ) -> Result<()> {
        let p = &self.plan.parts[part];
        let all = self.partials.as_ref().expect("the schedule has partials");
        let out = PartialsOut {
            binding: all.binding.clone(),
            offset: block as u32 * all.stride + p.rows.part_row,
        };
        let (col, w) = self.plan.cols[block];
        let sampler = self.loss.sampler(p.rows.inputs.temperatures)?;
        let (Some(view), Some(scratch)) = (p.rows.inputs.kept, self.kept) else {
            return self.loss.record_block_partials(
                encoder,
                (&p.logits, &p.targets),
                (col, w),
                0,
                out,
                sampler,
            );
        };
        let kept = KeptCall {
            view,
            scratch,
            part_row: p.rows.part_row,
            pairs: self.plan.kept_pairs(part) as u32,
        };
        let block = block_view(&p.logits, col, w);
        let col_offset = self.plan.col_offset + col;
        let x = (&block, &p.targets);
        let ctx = &self.loss.ctx;
        kept_partials::record(ctx, encoder, x, None, &sampler, col_offset, &out, &kept)
    }

    fn combine_blocks(&self, encoder: &mut wgpu::CommandEncoder, p: &PartPlan<'_>) -> Result<()> {
        let all = self.partials.as_ref().expect("the schedule has partials");
        let input = Gathered {
            binding: all.binding.clone(),
            offset: p.rows.part_row,
            stride: all.stride,
        };
        let starts = block_starts(&self.plan.cols, 0);
        self.combine(encoder, p, &starts, &input)
    }

    fn combine_shards(&self, encoder: &mut wgpu::CommandEncoder, p: &PartPlan<'_>) -> Result<()> {
        let s = self.shard.expect("the schedule merges shards");
        let limits = self.loss.ctx.device().limits();
        let shards = (s.starts.len() - 1) as u64;
        let (binding, first) = vec4_window(
            "gathered",
            &s.gathered,
            shards * self.plan.rows as u64,
            &limits,
        )?;
        let input = Gathered {
            binding,
            offset: first + p.rows.part_row,
            stride: self.plan.rows,
        };
        self.combine(encoder, p, s.starts, &input)
    }

    fn combine(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &PartPlan<'_>,
        starts: &[u32],
        input: &Gathered<'_>,
    ) -> Result<()> {
        let out = CombineOut::Stats {
            rowout: self.bufs.rowout,
            part_row: p.rows.part_row,
        };
        let ctx = &self.loss.ctx;
        combine::record(ctx, encoder, p.rows.rows, &p.targets, starts, input, &out)
    }

    fn reduce(&self, encoder: &mut wgpu::CommandEncoder, outputs: &LossOutputs<'_>) -> Result<()> {
        let layout = self.plan.schedule.scratch;
        let cfg = &self.loss.config;
        let phases = select::phases(cfg);
        // every part has the same optional inputs (plan checks it)
        let first = self.plan.parts.first();
        let inputs = first.map_or(0, |p| p.row_flags & (HAS_OLD | HAS_REF));
        let call = reduce::Call {
            rows: self.plan.rows,
            inputs,
            // (reduce binds rowin read-only already: it stands in for rowaux when there
            // is none, where the spare, bound writable there, cannot)
            aux: if layout.rowaux {
                self.bufs.rowaux
            } else {
                self.bufs.rowin
            },
            rollout: phases & select::ROLLOUT != 0,
            selection: phases & select::SELECT != 0,
            reads_rollout: first.is_some_and(|p| p.rows.inputs.rollout_logp.is_some()),
            off_policy: cfg.off_policy_mask_threshold.is_some(),
            vespo: match (cfg.mode, first.map(|p| p.rows.inputs.per_token_advantages)) {
                (PolicyLossMode::Vespo, Some(true)) => reduce::VESPO_TOKEN,
                (PolicyLossMode::Vespo, _) => reduce::VESPO_SEQ,
                _ => reduce::VESPO_NONE,
            },
        };
        let out = reduce::Out {
            metrics: &outputs.metrics,
            logprobs: outputs.logprobs.as_ref(),
            entropy: outputs.entropy.as_ref(),
            lse: outputs.lse.as_ref(),
        };
        reduce::record(&self.loss.ctx, encoder, &call, &self.bufs, &out)
    }
}

/// The flags every row launch of the call sets: which of select's results to read.
fn row_flags(loss: &PolicyLoss, selects: bool) -> u32 {
    let (cfg, mut flags) = (&loss.config, 0);
    if selects {
        let phases = select::phases(cfg);
        if phases & select::ROLLOUT != 0 {
            flags |= HAS_ROLLOUT;
        }
        if phases & select::SELECT != 0 {
            flags |= HAS_SELECTION;
        }
    }
    if cfg.top_entropy_renormalize {
        flags |= RENORMALIZE;
    }
    if loss.primitive {
        flags |= PRIMITIVE;
    }
    flags
}

fn all_seqs(plan: &Plan<'_>) -> AllSeqs {
    AllSeqs {
        seqs: plan.seqs,
        l_norm: plan.l_norm,
    }
}

/// A scratch buffer of at least `n` items of `bytes` each, grown when too small.
pub(super) fn grow<'s>(
    loss: &PolicyLoss,
    slot: &'s mut Option<(u32, wgpu::Buffer)>,
    label: &str,
    n: u32,
    bytes: u64,
) -> &'s wgpu::Buffer {
    if slot.as_ref().is_none_or(|(cap, _)| *cap < n) {
        let size = n.max(1) as u64 * bytes;
        let buffer = loss.ctx.buffer(label, size, wgpu::BufferUsages::STORAGE);
        *slot = Some((n, buffer));
    }
    &slot.as_ref().expect("scratch was just made").1
}

/// Columns `[col, col + width)` of every row of `logits`.
pub(super) fn block_view<'v>(logits: &LogitsView<'v>, col: u32, width: u32) -> LogitsView<'v> {
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
pub(super) fn block_starts(cols: &[ColumnBlock], col_offset: u32) -> Vec<u32> {
    let mut starts: Vec<u32> = cols.iter().map(|c| col_offset + c.0).collect();
    starts.push(col_offset + cols.last().map_or(0, |c| c.0 + c.1));
    starts
}

/// A binding of `len` 16-byte items of `view` (which starts on a 16-byte boundary) and
/// the item the view starts at.
pub(super) fn vec4_window<'v>(
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
