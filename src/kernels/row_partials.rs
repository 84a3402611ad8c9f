//! Host side of `shaders/row_partials.wgsl`: one shard's (or one column block's)
//! partial row statistics, `PARTIAL_FLOATS` f32 a row.

use super::{f32_window, record_row_sweep, Kernel};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::row_partials::*;
use crate::shader::abi::NO_TEMPS;
use crate::view::{F32View, LogitsView, TargetsView};

/// Where partials go: a binding of vec4 (16-byte) items and the item of row 0 in it.
pub(crate) struct PartialsOut<'a> {
    pub binding: wgpu::BufferBinding<'a>,
    pub offset: u32,
}

/// How the rows' logits map to the sampler's z (docs/MATH.md#the-samplers-distribution).
#[derive(Clone, Copy)]
pub(crate) struct Sampler<'a> {
    /// The call's scalar 1/τ.
    pub inv_tau: f32,
    /// The softcap c, 0 for none.
    pub softcap: f32,
    /// The rows' temperatures.
    pub temps: Option<F32View<'a>>,
}

impl<'a> Sampler<'a> {
    /// The map of `rows` rows' logits and what the row kernels bind at 8: the
    /// temperatures' window and the index of row 0 in it, else `spare` (any read-only
    /// buffer, never read) and NO_TEMPS.
    pub(crate) fn binding(
        &self,
        spare: &'a wgpu::Buffer,
        rows: u32,
        limits: &wgpu::Limits,
    ) -> Result<(super::SamplerMap, wgpu::BufferBinding<'a>, u32)> {
        let map = super::SamplerMap::of(self.softcap > 0.0, self.temps.is_some());
        let (binding, temps) = match &self.temps {
            Some(v) => f32_window("temperatures", v, rows as u64, limits)?,
            None => (spare.as_entire_buffer_binding(), NO_TEMPS),
        };
        Ok((map, binding, temps))
    }

    /// Every option off: the module of sampler/off.wgsl.
    pub(crate) fn off(inv_tau: f32) -> Self {
        Sampler {
            inv_tau,
            softcap: 0.0,
            temps: None,
        }
    }
}

/// Records the partials of `logits` (columns `col_offset ..` of the whole vocabulary,
/// `logits.vocab` of them) for every row, the target's z where these columns hold it.
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    logits: &LogitsView<'_>,
    targets: &TargetsView<'_>,
    sampler: &Sampler<'_>,
    col_offset: u32,
    out: &PartialsOut<'_>,
) -> Result<()> {
    let rows = logits.rows;
    if rows == 0 {
        return Ok(());
    }
    let limits = ctx.device().limits();
    let (map, temps_bind, temps) = sampler.binding(targets.buffer, rows, &limits)?;
    let chunk = |x, y, row_base, row_end| Params {
        x,
        y,
        row_base,
        row_end,
        vocab: logits.vocab,
        inv_tau: sampler.inv_tau,
        col_offset,
        out_offset: out.offset,
        temps,
        softcap: sampler.softcap,
    };
    let outputs = [out.binding.clone()];
    record_row_sweep(
        ctx,
        encoder,
        Kernel::RowPartials,
        (logits, targets),
        chunk,
        &outputs,
        (map, temps_bind),
    )
}
