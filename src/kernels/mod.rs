//! One module per shader: its bind layout, uniforms and dispatch. The WGSL lives in
//! `shaders/`; a kernel's module is a concatenation of snippets — how logits are
//! stored (`logits/`), where a gradient goes (`grad/`, `sweep/`), the shared prelude
//! and the workgroup reduction (`workgroup/`) — then the kernel itself. Workgroup size
//! and the 16-bit formats are `override` constants set when the pipeline is built.

pub(crate) mod advantages;
// the benchmarks' unfused baseline and copy roofline
#[cfg(feature = "tools")]
pub(crate) mod baseline;
pub(crate) mod combine;
pub(crate) mod head_rows;
pub(crate) mod kept_partials;
pub(crate) mod kept_select;
pub(crate) mod matmul;
pub(crate) mod policy_loss;
pub(crate) mod prepare;
pub(crate) mod reduce;
pub(crate) mod row_partials;
pub(crate) mod row_stats;
pub(crate) mod select;
pub(crate) mod seq_terms;

mod dispatch;
mod rows;

pub(crate) use crate::shader::abi::aggregate::*;
pub(crate) use crate::shader::{GradOut, Kernel, PipelineKey, SamplerMap};
pub(crate) use dispatch::*;
pub(crate) use rows::*;

use crate::error::Result;

/// `mode`'s code in aggregate.wgsl.
pub(crate) fn agg_code(mode: crate::config::LossAggMode) -> u32 {
    use crate::config::LossAggMode::*;
    match mode {
        TokenMean => AGG_TOKEN_MEAN,
        SeqMeanTokenMean => AGG_SEQ_MEAN_TOKEN_MEAN,
        SeqMeanTokenSum => AGG_SEQ_MEAN_TOKEN_SUM,
        SeqMeanTokenSumNorm => AGG_SEQ_MEAN_TOKEN_SUM_NORM,
        TokenSum => AGG_TOKEN_SUM,
    }
}

/// Records a one-sweep row kernel (row_stats, row_partials): one workgroup per row of
/// `logits` reads it once, with the row's id from `targets`, in chunks of rows as the
/// row kernels plan them. `params(x, y, first, end)` is a chunk's parameter block (the
/// layouts relative to its windows, its rows), and `outputs` are bound from binding 3
/// on in every chunk. `sampler` is the module's map of the logits and, where it binds
/// one (at 8), the per-row temperatures' window (or any read-only buffer).
pub(crate) fn record_row_sweep<P: bytemuck::Pod>(
    ctx: &crate::Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: Kernel,
    (logits, targets): (&crate::view::LogitsView<'_>, &crate::view::TargetsView<'_>),
    params: impl Fn(LayoutParams, LayoutParams, u32, u32) -> P,
    outputs: &[wgpu::BufferBinding<'_>],
    sampler: (SamplerMap, wgpu::BufferBinding<'_>),
) -> Result<()> {
    let x = (logits, targets);
    record_row_sweep_in(ctx, encoder, kernel, x, None, params, outputs, sampler)
}

/// The fused head's chunk of rows `[first, end)` in its own buffer (its row `first`
/// at element `base` of the binding's virtual numbering, as policy_loss.rs's
/// head_window binds it), in place of the logits view's windows.
pub(crate) struct ChunkRows<'a> {
    pub rows: (u32, u32),
    pub x: wgpu::BufferBinding<'a>,
    pub base: u64,
    pub quad: bool,
}

/// [`record_row_sweep`], over the head's `chunk` of rows alone where one is given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_row_sweep_in<P: bytemuck::Pod>(
    ctx: &crate::Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: Kernel,
    (logits, targets): (&crate::view::LogitsView<'_>, &crate::view::TargetsView<'_>),
    chunk: Option<ChunkRows<'_>>,
    params: impl Fn(LayoutParams, LayoutParams, u32, u32) -> P,
    outputs: &[wgpu::BufferBinding<'_>],
    sampler: (SamplerMap, wgpu::BufferBinding<'_>),
) -> Result<()> {
    let rows = logits.rows;
    let limits = ctx.device().limits();
    let quad = match &chunk {
        Some(c) => c.quad,
        None => logits
            .span()
            .quad_aligned(rows, logits.buffer.size(), &limits),
    };
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
    let chunks = match &chunk {
        Some(c) => vec![c.rows],
        None => plan_chunks(rows, &[tensors[0].span, tensors[1].span], &limits)?,
    };
    let mut blocks = Vec::with_capacity(chunks.len());
    let mut windows = Vec::with_capacity(chunks.len());
    for &(first, end) in chunks.iter().filter(|c| c.1 > c.0) {
        let (x_bind, x_base) = match &chunk {
            Some(c) => (c.x.clone(), c.base),
            None => tensors[0].window(first, end, &limits)?,
        };
        let (y_bind, y_base) = tensors[1].window(first, end, &limits)?;
        blocks.push(params(
            LayoutParams::new("logits", &logits.layout, x_base, rows)?,
            LayoutParams::new("targets", &targets.layout, y_base, rows)?,
            first,
            end,
        ));
        windows.push((x_bind, y_bind, grid(end - first, &limits)));
    }
    check_loops(
        ctx,
        "logits",
        "the row kernel (a row's sweep)",
        row_lane_steps(ctx, group_items(logits.vocab)),
    )?;
    let pipeline = ctx.pipeline(PipelineKey {
        kernel,
        logits: logits.dtype,
        grad: GradOut::None,
        paths: ctx.paths(),
        quad,
        grad_quad: false,
        lane_blocks: ctx.lane_blocks(),
        sampler: sampler.0,
    })?;
    let label = kernel.entry_point();
    let uniforms = ChunkUniforms::new(ctx, &format!("{label} params"), &blocks);
    let dispatches = sweep_dispatches(windows, &uniforms, outputs, &sampler);
    dispatch_chunks(ctx, encoder, label, &pipeline, &dispatches)
}

/// A one-sweep row kernel's bind groups per chunk: logits, uniforms, ids, the outputs
/// from binding 3 on, and the sampler's binding 8 where its map has one.
#[allow(clippy::type_complexity)]
fn sweep_dispatches<'a>(
    windows: Vec<(wgpu::BufferBinding<'a>, wgpu::BufferBinding<'a>, (u32, u32))>,
    uniforms: &'a ChunkUniforms,
    outputs: &[wgpu::BufferBinding<'a>],
    sampler: &(SamplerMap, wgpu::BufferBinding<'a>),
) -> Vec<(Vec<wgpu::BindGroupEntry<'a>>, (u32, u32))> {
    windows
        .into_iter()
        .enumerate()
        .map(|(i, (x, y, groups))| {
            let mut entries = vec![entry(0, x), uniforms.entry(1, i), entry(2, y)];
            entries.extend(
                outputs
                    .iter()
                    .enumerate()
                    .map(|(j, o)| entry(3 + j as u32, o.clone())),
            );
            if sampler.0.binds_temps() {
                entries.push(entry(8, sampler.1.clone()));
            }
            (entries, groups)
        })
        .collect()
}

/// The loss's O(rows) scratch buffers, as its kernels bind them (the records of
/// prelude.wgsl): per-row inputs, per-sequence weights, per-row statistics, select's
/// and seq_terms' per-row results (the spare where there are none), and a small spare
/// bound where a caller wants no per-row output.
#[derive(Clone, Copy)]
pub(crate) struct ScratchBufs<'a> {
    pub rowin: &'a wgpu::Buffer,
    pub seqinfo: &'a wgpu::Buffer,
    pub rowout: &'a wgpu::Buffer,
    pub rowaux: &'a wgpu::Buffer,
    pub spare: &'a wgpu::Buffer,
}

impl<'a> ScratchBufs<'a> {
    /// rowin, rowout, rowaux and seqinfo at bindings 1 to 4, as the one-workgroup kernels
    /// between the row statistics and the loss (select.wgsl, seq_terms.wgsl) bind them.
    pub(crate) fn batch_wide(&self) -> Vec<wgpu::BindGroupEntry<'a>> {
        vec![
            whole(1, self.rowin),
            whole(2, self.rowout),
            whole(3, self.rowaux),
            whole(4, self.seqinfo),
        ]
    }
}
