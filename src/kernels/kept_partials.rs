//! Host side of `shaders/kept_partials.wgsl`: a column block's (or a shard's) partial
//! row statistics over each row's given kept set, and the headers and kept (id, logit)
//! pairs that the loss launch takes its gradient from (`shaders/sampler/kept.wgsl`).

use super::row_partials::{PartialsOut, Sampler};
use super::{record_row_sweep_in, storage_window, ChunkRows, Kernel};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::kept_partials::*;
use crate::shader::abi::KEPT_HEADER;
use crate::view::{KeptView, LogitsView, TargetsView};

/// Items (`vec2<u32>`) of the kept scratch of a call: a header a row, one item a kept
/// id (its pair).
pub(crate) fn scratch_items(rows: u32, ids: u64) -> u64 {
    KEPT_HEADER as u64 * rows as u64 + ids
}

/// A part's kept sets and where its rows' headers and its pairs lie in the call's kept
/// scratch.
#[derive(Clone, Copy)]
pub(crate) struct KeptCall<'a> {
    pub view: KeptView<'a>,
    pub scratch: &'a wgpu::Buffer,
    /// The part's first row among the call's.
    pub part_row: u32,
    /// The item of the part's first pair in the scratch.
    pub pairs: u32,
}

/// Records the kept partials of `logits` (columns `col_offset ..` of the whole
/// vocabulary) for every row (or the head's `chunk` of rows) into `out`, and the
/// part's headers and pairs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    (logits, targets): (&LogitsView<'_>, &TargetsView<'_>),
    chunk: Option<ChunkRows<'_>>,
    sampler: &Sampler<'_>,
    col_offset: u32,
    out: &PartialsOut<'_>,
    kept: &KeptCall<'_>,
) -> Result<()> {
    let rows = logits.rows;
    if rows == 0 {
        return Ok(());
    }
    let limits = ctx.device().limits();
    let (map, temps_bind, temps) = sampler.binding(targets.buffer, rows, &limits)?;
    let k = &kept.view;
    let (first_offset, first_id) = k.validate(rows)?;
    let end = first_offset + rows as u64 + 1;
    let (offsets, offsets_base) =
        storage_window("keep_offsets", k.offsets, first_offset, end, 4, &limits)?;
    // no ids (every row keeps every token): any read-only binding stands in, never read
    let (ids, ids_base) = match k.len {
        0 => (offsets.clone(), 0),
        n => storage_window("keep_ids", k.ids, first_id, first_id + n as u64, 4, &limits)?,
    };
    let params = |x, y, row_base, row_end| Params {
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
        offsets_base,
        ids_base,
        ids_len: k.len,
        part_row: kept.part_row,
        pairs: kept.pairs,
        ..bytemuck::Zeroable::zeroed()
    };
    let outputs = [
        out.binding.clone(),
        offsets,
        ids,
        kept.scratch.as_entire_buffer_binding(),
    ];
    record_row_sweep_in(
        ctx,
        encoder,
        Kernel::KeptPartials,
        (logits, targets),
        chunk,
        params,
        &outputs,
        (map, temps_bind),
    )
}
