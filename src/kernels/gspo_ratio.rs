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
        part: part.span(),
        has_old: part.inputs.old_logp.is_some() as u32,
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
