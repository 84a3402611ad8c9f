//! Host side of `shaders/head_rows.wgsl`: a chunk of rows moved between a caller's
//! strided tensor (hidden states in, the head's gradients out) and the dense f32
//! matrix the head's matmuls use.

use super::{dispatch, entry, grid, storage_window, storage_window_in, uniform, whole};
use super::{Kernel, LayoutParams, PipelineKey};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::head_rows::*;
use crate::view::{DType, RowLayout};

/// Rows of a caller's tensor: `cols` elements of `dtype` per row, rows laid out by
/// `layout` (elements, columns contiguous).
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub arg: &'static str,
    pub buffer: &'a wgpu::Buffer,
    pub dtype: DType,
    pub layout: RowLayout,
    pub cols: u32,
}

/// One move: rows `first .. first + rows` of `strided` ↔ rows `0 .. rows` of the dense
/// f32 matrix from element `dense_offset` of `dense` (rows `cols` apart). With `mask`,
/// rowin's rows from `mask_row` on say which rows move as zeros.
pub(crate) struct Move<'a> {
    pub strided: Strided<'a>,
    pub first: u32,
    pub rows: u32,
    pub dense: &'a wgpu::Buffer,
    pub dense_offset: u64,
    pub mask: Option<(&'a wgpu::Buffer, u32)>,
    /// Dense → strided (else strided → dense).
    pub scatter: bool,
}

pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    spare: &wgpu::Buffer,
    m: &Move<'_>,
) -> Result<()> {
    if m.rows == 0 {
        return Ok(());
    }
    let limits = ctx.device().limits();
    let s = &m.strided;
    let (lo, hi) = s
        .layout
        .span_rows(m.first as u64, (m.first + m.rows) as u64, s.cols as u64);
    let (s_bind, inner) = storage_window_in(s.arg, s.buffer, lo, hi, s.dtype.size(), 4, &limits)?;
    let base = lo - inner as u64;
    let len = m.rows as u64 * s.cols as u64;
    let (d_bind, dense_offset) = storage_window(
        s.arg,
        m.dense,
        m.dense_offset,
        m.dense_offset + len,
        4,
        &limits,
    )?;
    let params = HeadRowsParams {
        rows_of: LayoutParams::new(s.arg, &s.layout, base, m.first + m.rows)?,
        rows: m.rows,
        cols: s.cols,
        first: m.first,
        mask_row: m.mask.map_or(0, |(_, r)| r),
        flags: if m.mask.is_some() { HR_MASK } else { 0 },
        dense_offset,
        ..bytemuck::Zeroable::zeroed()
    };
    let kernel = Kernel::HeadRows {
        dtype: s.dtype,
        scatter: m.scatter,
    };
    let pipeline = ctx.pipeline(PipelineKey::small(kernel, ctx.paths()))?;
    let u = uniform(ctx, "head rows params", &params);
    let entries = [
        whole(0, &u),
        whole(1, m.mask.map_or(spare, |(b, _)| b)),
        entry(2, d_bind),
        entry(3, s_bind),
    ];
    let label = kernel.entry_point();
    dispatch(
        ctx,
        encoder,
        label,
        &pipeline,
        &entries,
        grid(m.rows, &limits),
    )
}
