//! Host side of `shaders/matmul.wgsl`: C (+)= A·B over strided operands, the fused
//! linear head's three products (logits = h·Wᵀ, ∂L/∂h = Gz·W, ∂L/∂W = Gzᵀ·h).

use super::{dispatch, storage_window, uniform, whole, Kernel, PipelineKey};
use crate::context::Context;
use crate::error::{Error, Result};
pub(crate) use crate::shader::abi::matmul::*;
use crate::view::DType;

/// A matrix operand: element (i, j) is element `offset + i·row + j·col` of `buffer`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub arg: &'static str,
    pub buffer: &'a wgpu::Buffer,
    pub dtype: DType,
    pub offset: u64,
    pub row: u64,
    pub col: u64,
}

impl Operand<'_> {
    /// The elements an `rows × cols` matrix spans, first to one past the last.
    fn span(&self, rows: u32, cols: u32) -> (u64, u64) {
        let last = (rows.max(1) as u64 - 1) * self.row + (cols.max(1) as u64 - 1) * self.col;
        (self.offset, self.offset + last + 1)
    }
}

/// `C = A·B` (or `C += A·B`): A is m × k, B is k × n, C an f32 m × n matrix whose rows
/// start `c_row` elements apart from element `c_offset` of `c`.
pub(crate) struct Product<'a> {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    pub c: &'a wgpu::Buffer,
    pub c_offset: u64,
    pub c_row: u64,
    pub accumulate: bool,
}

fn to_u32(arg: &'static str, what: &str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::arg(arg, format!("{what} {v} does not fit 32 bits")))
}

/// The dispatch grid of `p` in tiles of `tile` × `tile`, within the device's limit.
fn workgroups(p: &Product<'_>, tile: u32, limits: &wgpu::Limits) -> Result<(u32, u32)> {
    let groups = (p.n.div_ceil(tile), p.m.div_ceil(tile));
    let most = limits.max_compute_workgroups_per_dimension;
    if groups.0.max(groups.1) > most {
        let arg = if groups.0 > most { p.b.arg } else { p.a.arg };
        return Err(Error::arg(
            arg,
            format!(
                "a {} × {} product needs {} × {} workgroups of {tile} × {tile}; the device \
                 dispatches at most {most} a dimension",
                p.m, p.n, groups.1, groups.0
            ),
        ));
    }
    Ok(groups)
}

/// Records the product: one workgroup per tile of C (128 × 128 on GPUs, 32 × 32 on CPU
/// adapters).
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &Product<'_>,
) -> Result<()> {
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    let limits = ctx.device().limits();
    let (a_first, a_end) = p.a.span(p.m, p.k);
    let (a_bind, a_offset) = storage_window(
        p.a.arg,
        p.a.buffer,
        a_first,
        a_end,
        p.a.dtype.size(),
        &limits,
    )?;
    let (b_first, b_end) = p.b.span(p.k, p.n);
    let (b_bind, b_offset) = storage_window(
        p.b.arg,
        p.b.buffer,
        b_first,
        b_end,
        p.b.dtype.size(),
        &limits,
    )?;
    let c_end = p.c_offset + (p.m as u64 - 1) * p.c_row + p.n as u64;
    let (c_bind, c_offset) = storage_window("c", p.c, p.c_offset, c_end, 4, &limits)?;
    let contiguous = |o: &Operand<'_>| match (o.col, o.row) {
        (1, _) => Ok(true),
        (_, 1) => Ok(false),
        _ => Err(Error::arg(
            o.arg,
            "needs its row or its column stride to be 1",
        )),
    };
    let (a_k_contig, b_n_contig) = (contiguous(&p.a)?, contiguous(&p.b)?);
    let flags = if p.accumulate { MM_ACCUMULATE } else { 0 };
    let params = MatmulParams {
        m: p.m,
        n: p.n,
        k: p.k,
        flags,
        a_offset,
        a_row: to_u32(p.a.arg, "row stride", p.a.row)?,
        a_col: to_u32(p.a.arg, "column stride", p.a.col)?,
        b_offset,
        b_row: to_u32(p.b.arg, "row stride", p.b.row)?,
        b_col: to_u32(p.b.arg, "column stride", p.b.col)?,
        c_offset,
        c_row: to_u32("c", "row stride", p.c_row)?,
    };
    let kernel = Kernel::Matmul {
        a: p.a.dtype,
        b: p.b.dtype,
        a_k_contig,
        b_n_contig,
    };
    let key = PipelineKey::small(kernel, ctx.paths()).with_lane_blocks(ctx.lane_blocks());
    let tile = key.matmul_tile();
    let pipeline = ctx.pipeline(key)?;
    let u = uniform(ctx, "matmul params", &params);
    let entries = [
        whole(0, &u),
        super::entry(1, a_bind),
        super::entry(2, b_bind),
        super::entry(3, c_bind),
    ];
    let groups = workgroups(p, tile, &limits)?;
    dispatch(ctx, encoder, "matmul", &pipeline, &entries, groups)
}

#[cfg(test)]
mod tests;
