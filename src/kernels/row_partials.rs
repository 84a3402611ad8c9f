//! Host side of `shaders/row_partials.wgsl`: one shard's (or one column block's)
//! partial row statistics, `PARTIAL_FLOATS` f32 a row.

use super::{
    check_loops, dispatch_chunks, entry, grid, lane_steps, plan_chunks, ChunkUniforms, GradOut,
    Kernel, LayoutParams, PipelineKey, RowTensor,
};
use crate::context::Context;
use crate::error::Result;
use crate::view::{LogitsView, TargetsView};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    x: LayoutParams,
    y: LayoutParams,
    row_base: u32,
    row_end: u32,
    vocab: u32,
    inv_tau: f32,
    col_offset: u32,
    out_offset: u32,
    _pad: [u32; 2],
}

/// Where partials go: a binding of vec4 (16-byte) items and the item of row 0 in it.
pub(crate) struct PartialsOut<'a> {
    pub binding: wgpu::BufferBinding<'a>,
    pub offset: u32,
}

/// Records the partials of `logits` (columns `col_offset ..` of the whole vocabulary,
/// `logits.vocab` of them) for every row, the target's z where these columns hold it.
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    logits: &LogitsView<'_>,
    targets: &TargetsView<'_>,
    inv_tau: f32,
    col_offset: u32,
    out: &PartialsOut<'_>,
) -> Result<()> {
    let rows = logits.rows;
    if rows == 0 {
        return Ok(());
    }
    let limits = ctx.device().limits();
    let quad = logits
        .span()
        .quad_aligned(rows, logits.buffer.size(), &limits);
    let tensors = [
        RowTensor {
            span: logits.span(),
            buffer: logits.buffer,
            quad,
        },
        RowTensor {
            span: targets.span(),
            buffer: targets.buffer,
            quad: false,
        },
    ];
    let chunks = plan_chunks(rows, &[tensors[0].span, tensors[1].span], &limits)?;
    let mut params = Vec::with_capacity(chunks.len());
    let mut windows = Vec::with_capacity(chunks.len());
    for &(first, end) in &chunks {
        let (x_bind, x_base) = tensors[0].window(first, end, &limits)?;
        let (y_bind, y_base) = tensors[1].window(first, end, &limits)?;
        params.push(Params {
            x: LayoutParams::new("logits", &logits.layout, x_base, rows)?,
            y: LayoutParams::new("targets", &targets.layout, y_base, rows)?,
            row_base: first,
            row_end: end,
            vocab: logits.vocab,
            inv_tau,
            col_offset,
            out_offset: out.offset,
            _pad: [0; 2],
        });
        windows.push((x_bind, y_bind, grid(end - first, &limits)));
    }
    let items = if quad {
        (logits.vocab as u64).div_ceil(4)
    } else {
        logits.vocab as u64
    };
    check_loops(
        ctx,
        "logits",
        "the row kernel (a row's sweep)",
        lane_steps(items),
    )?;
    let pipeline = ctx.pipeline(PipelineKey {
        kernel: Kernel::RowPartials,
        logits: logits.dtype,
        grad: GradOut::None,
        paths: ctx.paths(),
        quad,
        grad_quad: false,
        lane_blocks: ctx.lane_blocks(),
    })?;
    let uniforms = ChunkUniforms::new(ctx, "row_partials params", &params);
    let dispatches: Vec<_> = windows
        .into_iter()
        .enumerate()
        .map(|(i, (x, y, groups))| {
            let entries = vec![
                entry(0, x),
                uniforms.entry(1, i),
                entry(2, y),
                entry(3, out.binding.clone()),
            ];
            (entries, groups)
        })
        .collect();
    dispatch_chunks(ctx, encoder, "row_partials", &pipeline, &dispatches)
}
