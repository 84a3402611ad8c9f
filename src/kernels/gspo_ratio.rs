//! Host side of `shaders/gspo_ratio.wgsl`: GSPO's sequence-level ratio.

use super::{check_loops, dispatch, uniform, whole, Kernel, PipelineKey, Teams};
use crate::context::Context;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    rows_per_seq: u32,
    seqs: u32,
    has_old: u32,
    teams: Teams,
    _pad: [u32; 2],
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    rows: u32,
    rows_per_seq: u32,
    seqs: u32,
    has_old: bool,
    rowin: &wgpu::Buffer,
    rowout: &wgpu::Buffer,
    seqinfo: &wgpu::Buffer,
) -> Result<()> {
    let teams = Teams::new(seqs, rows_per_seq);
    check_loops(ctx, "logits", "gspo_ratio", teams.steps(rows_per_seq))?;
    let params = Params {
        rows,
        rows_per_seq,
        seqs,
        has_old: has_old as u32,
        teams,
        _pad: [0; 2],
    };
    let pipeline = ctx.pipeline(PipelineKey::small(Kernel::GspoRatio, ctx.paths()))?;
    let uniform = uniform(ctx, "gspo_ratio params", &params);
    dispatch(
        ctx,
        encoder,
        "gspo_ratio",
        &pipeline,
        &[
            whole(0, &uniform),
            whole(1, rowin),
            whole(2, rowout),
            whole(3, seqinfo),
        ],
        (1, 1),
    )
}
