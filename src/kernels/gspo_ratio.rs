//! Host side of `shaders/gspo_ratio.wgsl`: GSPO's sequence-level ratio, per part.

use super::prepare::PartRows;
use super::{check_loops, dispatch_single, whole, Kernel, ScratchBufs, Teams};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::gspo_ratio::*;

pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    part: &PartRows<'_>,
    scratch: &ScratchBufs<'_>,
) -> Result<()> {
    let teams = Teams::new(part.seqs, part.rows_per_seq);
    check_loops(ctx, "logits", "gspo_ratio", teams.steps(part.rows_per_seq))?;
    let params = Params {
        rows: part.rows,
        rows_per_seq: part.rows_per_seq,
        seqs: part.seqs,
        has_old: part.inputs.old_logp.is_some() as u32,
        part_row: part.part_row,
        part_seq: part.part_seq,
        teams,
        ..bytemuck::Zeroable::zeroed()
    };
    dispatch_single(
        ctx,
        encoder,
        Kernel::GspoRatio,
        &params,
        vec![
            whole(1, scratch.rowin),
            whole(2, scratch.rowout),
            whole(3, scratch.seqinfo),
        ],
    )
}
