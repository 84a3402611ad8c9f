//! Recording the head's own steps of a schedule: a chunk's logits (hidden rows
//! gathered, h·Wᵀ), its gradients (Gz·W scattered into ∂L/∂h, Gzᵀ·h summed into
//! ∂L/∂W) and ∂L/∂W's final rounding. The loss's steps are `loss/encode.rs`'s.

use super::{HeadGradients, HeadInputs, HeadPlan, MatrixView, Segment};
use crate::error::Result;
use crate::kernels::head_rows::{self, Move, Strided};
use crate::kernels::matmul::{self, Operand, Product};
use crate::kernels::policy_loss::{self, RowCall};
use crate::kernels::ScratchBufs;
use crate::loss::validate::Plan;
use crate::loss::PolicyLoss;
use crate::view::DType;

/// The head's buffers, each a handle on the loss's reusable scratch.
pub(crate) struct HeadBuffers {
    /// `chunk × stride` f32: the chunk's logits, then Gz over them.
    pub logits: wgpu::Buffer,
    /// `chunk × H` f32: the chunk's hidden rows (masked-out rows zero).
    pub hidden: wgpu::Buffer,
    /// `chunk × H` f32: the chunk's ∂L/∂h before its scatter.
    pub grad_hidden: wgpu::Buffer,
    /// ∂L/∂W's f32 sum where it does not go to the caller's rows, one buffer per
    /// [`HeadPlan::sums`].
    pub sums: Vec<wgpu::Buffer>,
}

/// What the head's steps of one call share.
pub(crate) struct HeadCall<'c> {
    pub inputs: &'c HeadInputs<'c>,
    pub grads: &'c HeadGradients<'c>,
    pub head: &'c HeadPlan,
    pub bufs: &'c HeadBuffers,
}

impl PolicyLoss {
    /// The head's scratch, grown to `head`'s sizes (each checked against the device's
    /// largest buffer first).
    pub(super) fn head_buffers(&self, head: &HeadPlan) -> Result<HeadBuffers> {
        let n = head.shape.chunks.first().map_or(1, |c| c.1 - c.0).max(1) as u64;
        let h = head.hidden as u64;
        let sizes: Vec<u64> = head.sums.iter().map(|s| s.1 as u64 * h * 4).collect();
        let ctx = &self.ctx;
        ctx.fits_buffer(
            "lm_head",
            "the chunk's f32 logits",
            n * head.stride as u64 * 4,
        )?;
        ctx.fits_buffer("hidden", "the chunk's f32 hidden rows", n * h * 4)?;
        for &bytes in &sizes {
            ctx.fits_buffer("grad_lm_head", "a block of its f32 sum", bytes)?;
        }
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut guard.head;
        let logits = grow(
            self,
            &mut s.logits,
            "head logits",
            n * head.stride as u64 * 4,
        );
        let hidden = grow(self, &mut s.hidden, "head hidden", n * h * 4);
        let grad_hidden = grow(self, &mut s.grad_hidden, "head grad_hidden", n * h * 4);
        if s.sums.len() < sizes.len() {
            s.sums.resize_with(sizes.len(), || None);
        }
        let sums = sizes
            .iter()
            .zip(&mut s.sums)
            .map(|(&bytes, slot)| grow(self, slot, "head grad_lm_head", bytes))
            .collect();
        Ok(HeadBuffers {
            logits,
            hidden,
            grad_hidden,
            sums,
        })
    }
}

/// A scratch buffer of at least `bytes`, grown when too small.
fn grow(
    loss: &PolicyLoss,
    slot: &mut Option<(u64, wgpu::Buffer)>,
    label: &str,
    bytes: u64,
) -> wgpu::Buffer {
    match slot {
        Some((cap, b)) if *cap >= bytes => b.clone(),
        _ => {
            let size = bytes.max(4);
            let b = loss.ctx.buffer(label, size, wgpu::BufferUsages::STORAGE);
            *slot = Some((size, b.clone()));
            b
        }
    }
}

/// The head's scratch slots (in the loss's `Scratch`), sizes in bytes.
#[derive(Default)]
pub(crate) struct HeadScratch {
    logits: Option<(u64, wgpu::Buffer)>,
    hidden: Option<(u64, wgpu::Buffer)>,
    grad_hidden: Option<(u64, wgpu::Buffer)>,
    sums: Vec<Option<(u64, wgpu::Buffer)>>,
}

impl HeadCall<'_> {
    fn strided<'v>(&self, arg: &'static str, v: &MatrixView<'v>) -> Strided<'v> {
        Strided {
            arg,
            buffer: v.buffer,
            dtype: v.dtype,
            layout: v.layout,
            cols: v.cols,
        }
    }

    /// W's rows of segment `s`, as B of a product: `Wᵀ` (k over H, n over V) or `W`
    /// (k over V, n over H).
    fn lm_head(&self, s: &Segment, transposed: bool) -> Operand<'_> {
        let w = &self.inputs.lm_head.blocks()[s.w.0];
        let row = w.layout.row_stride;
        let (r, c) = if transposed { (1, row) } else { (row, 1) };
        Operand {
            arg: "lm_head",
            buffer: w.buffer,
            dtype: w.dtype,
            offset: w.layout.offset + s.w.1 as u64 * row,
            row: r,
            col: c,
        }
    }

    /// Where segment `s` of ∂L/∂W's f32 sum goes: buffer, first element, row stride
    /// (its buffer of the sum, or the caller's f32 rows).
    fn grad_lm_head(&self, s: &Segment) -> Option<(&wgpu::Buffer, u64, u64)> {
        let h = self.head.hidden as u64;
        if let Some((i, row)) = s.sum {
            return Some((&self.bufs.sums[i], row as u64 * h, h));
        }
        let (i, row) = s.g?;
        let g = self.grads.lm_head.as_ref()?.blocks().get(i)?;
        let stride = g.layout.row_stride;
        Some((g.buffer, g.layout.offset + row as u64 * stride, stride))
    }

    fn dense<'b>(&self, arg: &'static str, buffer: &'b wgpu::Buffer) -> Operand<'b> {
        Operand {
            arg,
            buffer,
            dtype: DType::F32,
            offset: 0,
            row: self.head.hidden as u64,
            col: 1,
        }
    }

    /// Chunk `c`'s logits: its hidden rows gathered (masked-out rows as zeros), then
    /// `x = h·Wᵀ` into the chunk buffer, one matmul per vocabulary block.
    pub(crate) fn logits(
        &self,
        loss: &PolicyLoss,
        encoder: &mut wgpu::CommandEncoder,
        scratch: &ScratchBufs<'_>,
        c: usize,
    ) -> Result<()> {
        let (a, b) = self.head.shape.chunks[c];
        let gather = Move {
            strided: self.strided("hidden", &self.inputs.hidden),
            first: a,
            rows: b - a,
            dense: &self.bufs.hidden,
            dense_offset: 0,
            mask: Some((scratch.rowin, a)),
            scatter: false,
        };
        head_rows::record(&loss.ctx, encoder, scratch.spare, &gather)?;
        for s in &self.head.segments {
            let p = Product {
                m: b - a,
                n: s.rows,
                k: self.head.hidden,
                a: self.dense("hidden", &self.bufs.hidden),
                b: self.lm_head(s, true),
                c: &self.bufs.logits,
                c_offset: s.v0 as u64,
                c_row: self.head.stride as u64,
                accumulate: false,
            };
            matmul::record(&loss.ctx, encoder, &p)?;
        }
        Ok(())
    }

    /// The row kernel over chunk `c`'s logits, Gz in place where the phase writes it.
    pub(crate) fn row(
        &self,
        loss: &PolicyLoss,
        encoder: &mut wgpu::CommandEncoder,
        (plan, scratch, flags, kept): (&Plan<'_>, ScratchBufs<'_>, u32, Option<&wgpu::Buffer>),
        c: usize,
        phase: u32,
    ) -> Result<()> {
        let p = &plan.parts[0];
        let call = RowCall {
            config: &loss.config,
            logits: &p.logits,
            targets: &p.targets,
            rows_per_seq: p.rows.rows_per_seq,
            row_flags: p.row_flags | flags,
            part_row: p.rows.part_row,
            part_seq: p.rows.part_seq,
            grad: &p.grad,
            scratch,
            col_offset: 0,
            vocab_total: plan.vocab_total,
            chunk: Some(self.head.shape.chunks[c]),
            temps: p.rows.inputs.temperatures,
            kept,
        };
        policy_loss::record(&loss.ctx, encoder, &call, phase)
    }

    /// Chunk `c`'s gradients from Gz in the chunk buffer: ∂L/∂h = Gz·W (summed over the
    /// vocabulary blocks in order) scattered into its rows, masked-out rows exactly 0;
    /// ∂L/∂W (+)= Gzᵀ·h, the first chunk writing, the later ones adding.
    pub(crate) fn grads(
        &self,
        loss: &PolicyLoss,
        encoder: &mut wgpu::CommandEncoder,
        scratch: &ScratchBufs<'_>,
        c: usize,
    ) -> Result<()> {
        let (a, b) = self.head.shape.chunks[c];
        let h = self.head.hidden;
        let logits = |offset: u64, row: u64, col: u64| Operand {
            arg: "logits",
            buffer: &self.bufs.logits,
            dtype: DType::F32,
            offset,
            row,
            col,
        };
        let stride = self.head.stride as u64;
        if let Some(g) = &self.grads.hidden {
            for (i, s) in self.head.segments.iter().enumerate() {
                let p = Product {
                    m: b - a,
                    n: h,
                    k: s.rows,
                    a: logits(s.v0 as u64, stride, 1),
                    b: self.lm_head(s, false),
                    c: &self.bufs.grad_hidden,
                    c_offset: 0,
                    c_row: h as u64,
                    accumulate: i > 0,
                };
                matmul::record(&loss.ctx, encoder, &p)?;
            }
            let scatter = Move {
                strided: self.strided("grad_hidden", g),
                first: a,
                rows: b - a,
                dense: &self.bufs.grad_hidden,
                dense_offset: 0,
                mask: Some((scratch.rowin, a)),
                scatter: true,
            };
            head_rows::record(&loss.ctx, encoder, scratch.spare, &scatter)?;
        }
        for s in &self.head.segments {
            let Some((target, at, row)) = self.grad_lm_head(s) else {
                continue;
            };
            let p = Product {
                m: s.rows,
                n: h,
                k: b - a,
                a: logits(s.v0 as u64, 1, stride),
                b: self.dense("hidden", &self.bufs.hidden),
                c: target,
                c_offset: at,
                c_row: row,
                accumulate: c > 0,
            };
            matmul::record(&loss.ctx, encoder, &p)?;
        }
        Ok(())
    }

    /// ∂L/∂W's f32 sum rounded once into the caller's rows, a segment at a time.
    pub(crate) fn finish(
        &self,
        loss: &PolicyLoss,
        encoder: &mut wgpu::CommandEncoder,
        scratch: &ScratchBufs<'_>,
    ) -> Result<()> {
        let Some(g) = &self.grads.lm_head else {
            return Ok(());
        };
        for s in &self.head.segments {
            let (Some((si, sr)), Some((gi, gr))) = (s.sum, s.g) else {
                continue;
            };
            let scatter = Move {
                strided: self.strided("grad_lm_head", &g.blocks()[gi]),
                first: gr,
                rows: s.rows,
                dense: &self.bufs.sums[si],
                dense_offset: sr as u64 * self.head.hidden as u64,
                mask: None,
                scatter: true,
            };
            head_rows::record(&loss.ctx, encoder, scratch.spare, &scatter)?;
        }
        Ok(())
    }
}
