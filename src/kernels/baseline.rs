//! Host side of `shaders/baseline.wgsl` and `shaders/copy.wgsl`: the unfused baseline
//! and the copy roofline of the benchmarks.

use super::abi::{wgsl_struct, Abi, COMMON, SHARED};
use super::{
    dispatch, dispatch_chunks, entry, grid, plan_chunks, storage_window, uniform, whole,
    BaselineOp, ChunkUniforms, GradOut, Kernel, LayoutParams, PipelineKey, RowSpan, RowTensor,
};
use crate::context::Context;
use crate::error::Result;
use crate::view::{LogitsView, RowLayout};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct Params {
        x: LayoutParams,
        row_base: u32,
        row_end: u32,
        vocab: u32,
        rows: u32,
        /// element offset of row_base in the [T,V] f32 intermediates' bound window
        full_offset: u32,
        /// element of the first row's token id in the targets' bound window
        y_offset: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL]];

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

/// Records the whole unfused forward + backward: five kernels, four of them chunked
/// over rows like the library's own.
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    logits: &LogitsView<'_>,
    b: &BaselineBuffers<'_>,
) -> Result<()> {
    let limits = ctx.device().limits();
    let rows = logits.rows;
    let vocab = logits.vocab;
    let dense = RowLayout {
        offset: 0,
        row_stride: vocab as u64,
        rows_per_seq: u32::MAX,
        seq_stride: 0,
    };
    let full = |arg| RowSpan {
        arg,
        layout: dense,
        width: vocab as u64,
        elem: 4,
    };
    let x = RowTensor {
        span: logits.span(),
        buffer: logits.buffer,
        quad: false,
    };
    let a = RowTensor {
        span: full("full_a"),
        buffer: b.full_a,
        quad: false,
    };
    let bb = RowTensor {
        span: full("full_b"),
        buffer: b.full_b,
        quad: false,
    };
    let chunks = plan_chunks(rows, &[x.span, a.span, bb.span], &limits)?;
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
    for &(first, end) in &chunks {
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
    let uniforms = ChunkUniforms::new(ctx, "baseline params", &params);
    let key = |op| PipelineKey {
        kernel: Kernel::Baseline(op),
        logits: logits.dtype,
        grad: GradOut::None,
        paths: ctx.paths(),
        quad: false,
        grad_quad: false,
        lane_blocks: false,
    };
    // each op binds only what its entry point uses (auto layouts drop the rest)
    let row_pass = |op, encoder: &mut wgpu::CommandEncoder| -> Result<()> {
        let pipeline = ctx.pipeline(key(op))?;
        let dispatches: Vec<_> = windows
            .iter()
            .enumerate()
            .map(|(i, (xw, aw, bw, first, end))| {
                let mut e = vec![uniforms.entry(1, i)];
                match op {
                    BaselineOp::LogSoftmax => {
                        e.extend([entry(0, xw.clone()), entry(3, aw.clone())]);
                    }
                    BaselineOp::Gather => e.extend([
                        entry(2, y_bind.clone()),
                        entry(3, aw.clone()),
                        whole(5, b.rowvec),
                    ]),
                    BaselineOp::ScatterGrad => e.extend([
                        entry(2, y_bind.clone()),
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
    };
    row_pass(BaselineOp::LogSoftmax, encoder)?;
    row_pass(BaselineOp::Gather, encoder)?;
    let mean = ctx.pipeline(key(BaselineOp::MaskedMean))?;
    dispatch(
        ctx,
        encoder,
        "baseline masked_mean",
        &mean,
        &[uniforms.entry(1, 0), whole(5, b.rowvec), whole(6, b.loss)],
        (1, 1),
    )?;
    row_pass(BaselineOp::ScatterGrad, encoder)?;
    row_pass(BaselineOp::LogSoftmaxBwd, encoder)
}

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct CopyParams {
        count: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

pub(crate) const COPY_ABI: Abi = &[COMMON, SHARED, &[CopyParams::DECL]];

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
