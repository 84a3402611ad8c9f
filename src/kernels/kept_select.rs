//! Host side of `shaders/kept_select.wgsl`: each row's threshold θ of the kept set
//! that top-k, top-p and min-p compute (docs/MATH.md#computed-kept-sets), written
//! with the row's header into the kept scratch for the loss launch
//! (`shaders/sampler/kept.wgsl`).

use super::row_partials::Sampler;
use super::{record_row_sweep_in, ChunkRows, Kernel};
use crate::config::LossConfig;
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::kept_select::*;
use crate::view::{LogitsView, TargetsView};

/// The rules of a computed kept set, as the kernel takes them (off: top_k 0, top_p 1,
/// min_p 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rules {
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
}

impl Rules {
    /// The configuration's rules, where any is on.
    pub(crate) fn of(cfg: &LossConfig) -> Option<Self> {
        cfg.computes_kept_set().then(|| Rules {
            top_k: cfg.top_k.max(0) as u32,
            top_p: cfg.top_p,
            min_p: cfg.min_p,
        })
    }
}

/// Records the kept sets' thresholds of `logits` for every row (or the head's `chunk`
/// of rows): the headers of the part's rows, whose first is row `part_row` of the call.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    (logits, targets): (&LogitsView<'_>, &TargetsView<'_>),
    chunk: Option<ChunkRows<'_>>,
    sampler: &Sampler<'_>,
    rules: Rules,
    scratch: &wgpu::Buffer,
    part_row: u32,
) -> Result<()> {
    let rows = logits.rows;
    if rows == 0 {
        return Ok(());
    }
    let limits = ctx.device().limits();
    let (map, temps_bind, temps) = sampler.binding(targets.buffer, rows, &limits)?;
    let params = |x, y, row_base, row_end| Params {
        x,
        y,
        row_base,
        row_end,
        vocab: logits.vocab,
        inv_tau: sampler.inv_tau,
        temps,
        softcap: sampler.softcap,
        part_row,
        top_k: rules.top_k,
        top_p: rules.top_p,
        min_p: rules.min_p,
        ..bytemuck::Zeroable::zeroed()
    };
    let outputs = [scratch.as_entire_buffer_binding()];
    record_row_sweep_in(
        ctx,
        encoder,
        Kernel::KeptSelect,
        (logits, targets),
        chunk,
        params,
        &outputs,
        (map, temps_bind),
    )
}
