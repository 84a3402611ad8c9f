//! Host side of `shaders/reduce.wgsl`: the loss and metrics, and the per-row outputs.

use super::{
    dispatch, entry, f32_window, storage_window, uniform, whole, Kernel, LayoutParams, PipelineKey,
};
use crate::context::Context;
use crate::error::Result;
use crate::view::{F32View, TargetsView};

/// Values the reduce kernel writes, in order.
pub(crate) const METRICS: u64 = 10;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    has_old: u32,
    metrics_offset: u32,
    logp_offset: u32,
    entropy_offset: u32,
    write_rows: u32,
    vocab: u32,
    _pad: u32,
    y: LayoutParams,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn record<'a>(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    rows: u32,
    has_old: bool,
    rowin: &wgpu::Buffer,
    rowout: &wgpu::Buffer,
    targets: &TargetsView<'a>,
    vocab: u32,
    metrics: &F32View<'a>,
    logp: Option<&F32View<'a>>,
    entropy: Option<&F32View<'a>>,
) -> Result<()> {
    let limits = ctx.device().limits();
    let n = rows as u64;
    let window = |arg, v: &F32View<'a>, len: u64| f32_window(arg, v, len, &limits);
    let (m_bind, metrics_offset) = window("outputs.metrics", metrics, METRICS)?;
    // without caller buffers for the per-row outputs, the metrics buffer stands in and
    // the kernel writes nothing there
    let write_rows = logp.is_some() && entropy.is_some();
    let (l_bind, logp_offset) = match logp.filter(|_| write_rows) {
        Some(v) => window("outputs.logprobs", v, n)?,
        None => (m_bind.clone(), 0),
    };
    let (e_bind, entropy_offset) = match entropy.filter(|_| write_rows) {
        Some(v) => window("outputs.entropy", v, n)?,
        None => (m_bind.clone(), 0),
    };
    let (y_first, y_end) = targets.layout.span(rows as u64, 1);
    let (y_bind, y_offset) = storage_window("targets", targets.buffer, y_first, y_end, 4, &limits)?;
    let params = Params {
        rows,
        has_old: has_old as u32,
        metrics_offset,
        logp_offset,
        entropy_offset,
        write_rows: write_rows as u32,
        vocab,
        _pad: 0,
        y: LayoutParams::new("targets", &targets.layout, y_first - y_offset as u64, rows)?,
    };
    let pipeline = ctx.pipeline(PipelineKey::small(Kernel::Reduce, ctx.paths()))?;
    let uniform = uniform(ctx, "reduce params", &params);
    dispatch(
        ctx,
        encoder,
        "reduce",
        &pipeline,
        &[
            whole(0, &uniform),
            whole(1, rowin),
            whole(2, rowout),
            entry(3, m_bind),
            entry(4, l_bind),
            entry(5, e_bind),
            entry(6, y_bind),
        ],
        (1, 1),
    )
}
