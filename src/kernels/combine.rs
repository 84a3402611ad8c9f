//! Host side of `shaders/combine.wgsl`: the partials of every shard (or column block)
//! merged, in rank order, into row statistics (rowout) or into one partial.

use super::{
    check_loops, dispatch_chunks, entry, plan_chunks, ChunkUniforms, Kernel, LayoutParams,
    PipelineKey, RowTensor,
};
use crate::context::{Context, ROW_WORKGROUP};
use crate::error::Result;
pub(crate) use crate::shader::abi::combine::*;
use crate::view::TargetsView;

/// Where the merged statistics go.
pub(crate) enum CombineOut<'a> {
    /// The row kernel's statistics of rows `part_row ..` of the call, in rowout.
    Stats {
        rowout: &'a wgpu::Buffer,
        part_row: u32,
    },
    /// One partial a row, at vec4 item `offset ..` of the binding.
    Partial(super::row_partials::PartialsOut<'a>),
    /// row_stats.wgsl's outputs: lse, log-prob and entropy, each a binding and the
    /// element of row 0 in it.
    RowStats([(wgpu::BufferBinding<'a>, u32); 3]),
}

/// A binding and the element of row 0 in it.
type Window<'a> = (wgpu::BufferBinding<'a>, u32);

impl<'a> CombineOut<'a> {
    /// The output bindings (a window of the spare of its own where the mode writes
    /// none: WebGPU refuses two writable bindings of one range in a dispatch).
    fn bindings<'s>(&'s self, spare: &'s wgpu::Buffer, align: u64) -> OutBindings<'s> {
        let slot = std::cell::Cell::new(0u64);
        let none = || {
            let at = slot.get();
            slot.set(at + 1);
            let window = wgpu::BufferBinding {
                buffer: spare,
                offset: at * align,
                size: std::num::NonZeroU64::new(16),
            };
            (window, 0)
        };
        let (mode, part_row, out_offset, out, rows) = match self {
            CombineOut::Stats { rowout, part_row } => (
                MODE_STATS,
                *part_row,
                0,
                rowout.as_entire_buffer_binding(),
                [none(), none(), none()],
            ),
            CombineOut::Partial(p) => (
                MODE_PARTIAL,
                0,
                p.offset,
                p.binding.clone(),
                [none(), none(), none()],
            ),
            CombineOut::RowStats(outs) => (MODE_ROW_STATS, 0, 0, none().0, outs.clone()),
        };
        OutBindings {
            mode,
            part_row,
            out_offset,
            out,
            rows,
        }
    }
}

/// Where a mode writes: the shader's mode, the first row of the call, the first item
/// of the output, the statistics or partials, and lse, log-prob and entropy.
struct OutBindings<'s> {
    mode: u32,
    part_row: u32,
    out_offset: u32,
    out: wgpu::BufferBinding<'s>,
    rows: [Window<'s>; 3],
}

/// The gathered partials: shard k's partial of row r is vec4 item
/// `offset + k·stride + r` of `binding`.
pub(crate) struct Gathered<'a> {
    pub binding: wgpu::BufferBinding<'a>,
    pub offset: u32,
    pub stride: u32,
}

/// Records the merge of `starts.len() - 1` shards' partials for `rows` rows, whose
/// target ids `targets` holds; shard k owns the columns `starts[k] .. starts[k + 1]`.
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    rows: u32,
    targets: &TargetsView<'_>,
    starts: &[u32],
    input: &Gathered<'_>,
    out: &CombineOut<'_>,
) -> Result<()> {
    record_rows(ctx, encoder, (rows, (0, rows)), targets, starts, input, out)
}

/// The chunks of rows `[lo, hi)` of `rows`: a workgroup takes ROW_WORKGROUP rows, in
/// chunks of rows as the row kernels plan them, each at most a grid of workgroups.
fn row_chunks(
    rows: u32,
    (lo, hi): (u32, u32),
    ids: &RowTensor<'_>,
    limits: &wgpu::Limits,
) -> Result<Vec<(u32, u32)>> {
    Ok(plan_chunks(rows, &[ids.span], limits)?
        .into_iter()
        .map(|(a, b)| (a.max(lo), b.min(hi)))
        .filter(|(a, b)| a < b)
        .collect())
}

/// [`record`] of rows `[first, end)` of the `rows` alone (the fused head's chunk).
pub(crate) fn record_rows(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    (rows, (lo, hi)): (u32, (u32, u32)),
    targets: &TargetsView<'_>,
    starts: &[u32],
    input: &Gathered<'_>,
    out: &CombineOut<'_>,
) -> Result<()> {
    if rows == 0 || hi <= lo {
        return Ok(());
    }
    let limits = ctx.device().limits();
    let shards = (starts.len() - 1) as u32;
    check_loops(ctx, "shards", "combine", 2 * shards as u64)?;
    let ids = RowTensor {
        span: targets.span(),
        buffer: targets.buffer,
        quad: false,
    };
    let chunks = row_chunks(rows, (lo, hi), &ids, &limits)?;
    let starts_buf = ctx.buffer_init(
        "combine starts",
        bytemuck::cast_slice(starts),
        wgpu::BufferUsages::STORAGE,
    );
    // the bindings a mode does not write get a small spare buffer
    let align = (limits.min_storage_buffer_offset_alignment as u64).max(16);
    let spare = ctx.buffer("combine spare", 3 * align + 16, wgpu::BufferUsages::STORAGE);
    let OutBindings {
        mode,
        part_row,
        out_offset,
        out: out_bind,
        rows: [lse, logp, entropy],
    } = out.bindings(&spare, align);
    let mut params = Vec::with_capacity(chunks.len());
    let mut windows = Vec::with_capacity(chunks.len());
    for &(first, end) in &chunks {
        let (y_bind, y_base) = ids.window(first, end, &limits)?;
        params.push(Params {
            y: LayoutParams::new("targets", &targets.layout, y_base, rows)?,
            row_base: first,
            row_end: end,
            shards,
            in_offset: input.offset,
            in_stride: input.stride,
            mode,
            part_row,
            out_offset,
            lse_offset: lse.1,
            logp_offset: logp.1,
            entropy_offset: entropy.1,
            ..bytemuck::Zeroable::zeroed()
        });
        let groups = (end - first).div_ceil(ROW_WORKGROUP);
        windows.push((y_bind, super::grid(groups, &limits)));
    }
    let pipeline = ctx.pipeline(PipelineKey::small(Kernel::Combine, ctx.paths()))?;
    let uniforms = ChunkUniforms::new(ctx, "combine params", &params);
    let dispatches: Vec<_> = windows
        .into_iter()
        .enumerate()
        .map(|(i, (y, groups))| {
            let entries = vec![
                entry(0, input.binding.clone()),
                uniforms.entry(1, i),
                entry(2, y),
                super::whole(3, &starts_buf),
                entry(4, out_bind.clone()),
                entry(5, lse.0.clone()),
                entry(6, logp.0.clone()),
                entry(7, entropy.0.clone()),
            ];
            (entries, groups)
        })
        .collect();
    dispatch_chunks(ctx, encoder, "combine", &pipeline, &dispatches)
}
