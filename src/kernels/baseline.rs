//! Host side of `shaders/baseline.wgsl` and `shaders/copy.wgsl`: the unfused baseline
//! and the copy roofline of the benchmarks.

use super::{
    dispatch, dispatch_chunks, entry, grid, plan_chunks, storage_window, uniform, whole,
    ChunkUniforms, GradOut, Kernel, LayoutParams, PipelineKey, RowSpan, RowTensor,
};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::baseline::*;
use crate::shader::BaselineOp;
use crate::view::{LogitsView, RowLayout};

/// The baseline's buffers: two `[T, V]` f32 intermediates, per-row `(mask, advantage,
/// logp, g)` and the loss; the token ids from element `targets_first` of `targets`.
pub(crate) struct BaselineBuffers<'a> {
    pub targets: &'a wgpu::Buffer,
    pub targets_first: u64,
    pub full_a: &'a wgpu::Buffer,
    pub full_b: &'a wgpu::Buffer,
    pub rowvec: &'a wgpu::Buffer,
    pub loss: &'a wgpu::Buffer,
}

/// One chunk of rows: the logits' and both intermediates' windows, and its rows.
type Window<'a> = (
    wgpu::BufferBinding<'a>,
    wgpu::BufferBinding<'a>,
    wgpu::BufferBinding<'a>,
    u32,
    u32,
);

/// The chunks of a call, their parameter blocks, and the ids' window.
struct Chunks<'a> {
    windows: Vec<Window<'a>>,
    uniforms: ChunkUniforms,
    y_bind: wgpu::BufferBinding<'a>,
}

/// Plans the chunks of rows whose logits and intermediates each fit one binding.
fn chunks<'a>(
    ctx: &Context,
    logits: &LogitsView<'a>,
    b: &BaselineBuffers<'a>,
) -> Result<Chunks<'a>> {
    let limits = ctx.device().limits();
    let (rows, vocab) = (logits.rows, logits.vocab);
    let dense = RowLayout {
        offset: 0,
        row_stride: vocab as u64,
        rows_per_seq: u32::MAX,
        seq_stride: 0,
    };
    let tensor = |arg, buffer| RowTensor {
        span: RowSpan {
            arg,
            layout: dense,
            width: vocab as u64,
            elem: 4,
        },
        buffer,
        quad: false,
    };
    let x = RowTensor {
        span: logits.span(),
        buffer: logits.buffer,
        quad: false,
    };
    let (a, bb) = (tensor("full_a", b.full_a), tensor("full_b", b.full_b));
    let planned = plan_chunks(rows, &[x.span, a.span, bb.span], &limits)?;
    let y_first = b.targets_first;
    let (y_bind, y_offset) = storage_window(
        "targets",
        b.targets,
        y_first,
        y_first + rows as u64,
        4,
        &limits,
    )?;
    let mut params = Vec::new();
    let mut windows = Vec::new();
    for &(first, end) in &planned {
        let (x_bind, x_base) = x.window(first, end, &limits)?;
        let (a_bind, a_base) = a.window(first, end, &limits)?;
        let (b_bind, b_base) = bb.window(first, end, &limits)?;
        // both intermediates are dense: the same offset inside either window
        debug_assert_eq!(a_base, b_base);
        params.push(Params {
            x: LayoutParams::new("logits", &logits.layout, x_base, rows)?,
            row_base: first,
            row_end: end,
            vocab,
            rows,
            full_offset: (first as u64 * vocab as u64 - a_base) as u32,
            y_offset,
            ..bytemuck::Zeroable::zeroed()
        });
        windows.push((x_bind, a_bind, b_bind, first, end));
    }
    Ok(Chunks {
        windows,
        uniforms: ChunkUniforms::new(ctx, "baseline params", &params),
        y_bind,
    })
}

fn key(ctx: &Context, logits: &LogitsView<'_>, op: BaselineOp) -> PipelineKey {
    PipelineKey {
        kernel: Kernel::Baseline(op),
        logits: logits.dtype,
        grad: GradOut::None,
        paths: ctx.paths(),
        quad: false,
        grad_quad: false,
        lane_blocks: false,
        sampler: crate::shader::SamplerMap::Off,
    }
}

/// One op over every chunk; each binds only what its entry point uses (auto layouts
/// drop the rest).
fn row_pass(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    logits: &LogitsView<'_>,
    b: &BaselineBuffers<'_>,
    c: &Chunks<'_>,
    op: BaselineOp,
) -> Result<()> {
    let limits = ctx.device().limits();
    let pipeline = ctx.pipeline(key(ctx, logits, op))?;
    let dispatches: Vec<_> = c
        .windows
        .iter()
        .enumerate()
        .map(|(i, (xw, aw, bw, first, end))| {
            let mut e = vec![c.uniforms.entry(1, i)];
            match op {
                BaselineOp::LogSoftmax => e.extend([entry(0, xw.clone()), entry(3, aw.clone())]),
                BaselineOp::Gather => e.extend([
                    entry(2, c.y_bind.clone()),
                    entry(3, aw.clone()),
                    whole(5, b.rowvec),
                ]),
                BaselineOp::ScatterGrad => e.extend([
                    entry(2, c.y_bind.clone()),
                    entry(4, bw.clone()),
                    whole(5, b.rowvec),
                ]),
                _ => e.extend([entry(3, aw.clone()), entry(4, bw.clone())]),
            }
            let groups = if op == BaselineOp::Gather {
                grid((end - first).div_ceil(256), &limits)
            } else {
                grid(end - first, &limits)
            };
            (e, groups)
        })
        .collect();
    dispatch_chunks(ctx, encoder, "baseline", &pipeline, &dispatches)
}

/// Records the whole unfused forward + backward: five kernels, four of them chunked
/// over rows like the library's own.
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    logits: &LogitsView<'_>,
    b: &BaselineBuffers<'_>,
) -> Result<()> {
    let c = chunks(ctx, logits, b)?;
    row_pass(ctx, encoder, logits, b, &c, BaselineOp::LogSoftmax)?;
    row_pass(ctx, encoder, logits, b, &c, BaselineOp::Gather)?;
    let mean = ctx.pipeline(key(ctx, logits, BaselineOp::MaskedMean))?;
    dispatch(
        ctx,
        encoder,
        "baseline masked_mean",
        &mean,
        &[c.uniforms.entry(1, 0), whole(5, b.rowvec), whole(6, b.loss)],
        (1, 1),
    )?;
    row_pass(ctx, encoder, logits, b, &c, BaselineOp::ScatterGrad)?;
    row_pass(ctx, encoder, logits, b, &c, BaselineOp::LogSoftmaxBwd)
}

/// Copies the first `bytes` (a multiple of 16) of `src` to `dst` with the copy kernel,
/// in chunks that fit a binding.
pub(crate) fn record_copy(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    bytes: u64,
) -> Result<()> {
    let limits = ctx.device().limits();
    let max = limits.max_storage_buffer_binding_size / 256 * 256;
    let pipeline = ctx.pipeline(PipelineKey::small(Kernel::Copy, ctx.paths()))?;
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(max);
        let count = (n / 16) as u32;
        let params = uniform(
            ctx,
            "copy params",
            &CopyParams {
                count,
                ..bytemuck::Zeroable::zeroed()
            },
        );
        let bind = |buffer| {
            entry(
                0,
                wgpu::BufferBinding {
                    buffer,
                    offset: at,
                    size: std::num::NonZeroU64::new(n),
                },
            )
        };
        let (mut s, mut d) = (bind(src), bind(dst));
        s.binding = 1;
        d.binding = 2;
        let groups = grid(count.div_ceil(256), &limits);
        dispatch(
            ctx,
            encoder,
            "copy",
            &pipeline,
            &[whole(0, &params), s, d],
            groups,
        )?;
        at += n;
    }
    Ok(())
}
