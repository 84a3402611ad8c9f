//! Host side of `shaders/row_partials.wgsl`: one shard's (or one column block's)
//! partial row statistics, `PARTIAL_FLOATS` f32 a row.

use super::{record_row_sweep, Kernel};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::row_partials::*;
use crate::view::{LogitsView, TargetsView};

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
    let chunk = |x, y, row_base, row_end| Params {
        x,
        y,
        row_base,
        row_end,
        vocab: logits.vocab,
        inv_tau,
        col_offset,
        out_offset: out.offset,
        ..bytemuck::Zeroable::zeroed()
    };
    let outputs = [out.binding.clone()];
    record_row_sweep(
        ctx,
        encoder,
        Kernel::RowPartials,
        logits,
        targets,
        chunk,
        &outputs,
    )
}
