//! The launches of kept sets in a recorded call: a given set's partials over the fused
//! head's chunk (then merged into the chunk's row statistics), and a computed set's
//! thresholds (`kept_select.wgsl`) over a part or a chunk.

use super::encode::{block_starts, Encoding};
use super::validate::PartPlan;
use crate::error::{Error, Result};
use crate::kernels::combine::{self, CombineOut, Gathered};
use crate::kernels::kept_partials::{self, KeptCall};
use crate::kernels::kept_select;
use crate::kernels::policy_loss;
use crate::kernels::row_partials::PartialsOut;

impl Encoding<'_> {
    /// The kept partials of the head's chunk `c` (its rows in the chunk buffer), then
    /// the chunk's rows' statistics merged from them.
    pub(super) fn head_kept(&self, encoder: &mut wgpu::CommandEncoder, c: usize) -> Result<()> {
        let p = &self.plan.parts[0];
        let (view, scratch) = (p.rows.inputs.kept, self.kept);
        let (Some(view), Some(scratch)) = (view, scratch) else {
            return Err(Error::arg(
                "keep_offsets",
                "the schedule has kept steps only with kept sets",
            ));
        };
        let all = self.partials.as_ref().expect("the schedule has partials");
        let rows = self.head().head.shape.chunks[c];
        let limits = self.loss.ctx.device().limits();
        let chunk = policy_loss::head_chunk(&p.logits, rows, &limits)?;
        let out = PartialsOut {
            binding: all.binding.clone(),
            offset: p.rows.part_row,
        };
        let kept = KeptCall {
            view,
            scratch,
            part_row: p.rows.part_row,
            pairs: self.plan.kept_pairs(0) as u32,
        };
        let sampler = self.loss.sampler(p.rows.inputs.temperatures)?;
        let x = (&p.logits, &p.targets);
        let ctx = &self.loss.ctx;
        kept_partials::record(ctx, encoder, x, Some(chunk), &sampler, 0, &out, &kept)?;
        // the chunk's rows alone: the others' rowout may hold their loss already
        let input = Gathered {
            binding: all.binding.clone(),
            offset: p.rows.part_row,
            stride: all.stride,
        };
        let starts = block_starts(&self.plan.cols, 0);
        let out = CombineOut::Stats {
            rowout: self.bufs.rowout,
            part_row: p.rows.part_row,
        };
        let rows = (p.rows.rows, rows);
        combine::record_rows(ctx, encoder, rows, &p.targets, &starts, &input, &out)
    }

    /// The thresholds of the computed kept sets of part `p`'s rows (or of the head's
    /// chunk of them), into the kept scratch.
    pub(super) fn kept_select(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &PartPlan<'_>,
        chunk: Option<crate::kernels::ChunkRows<'_>>,
    ) -> Result<()> {
        let (Some(rules), Some(scratch)) = (kept_select::Rules::of(&self.loss.config), self.kept)
        else {
            return Err(Error::arg(
                "top_k",
                "the schedule selects kept sets only where top-k, top-p or min-p is on",
            ));
        };
        let sampler = self.loss.sampler(p.rows.inputs.temperatures)?;
        let x = (&p.logits, &p.targets);
        let part_row = p.rows.part_row;
        let ctx = &self.loss.ctx;
        kept_select::record(ctx, encoder, x, chunk, &sampler, rules, scratch, part_row)
    }
}
