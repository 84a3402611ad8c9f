//! Recording the head's own steps of a schedule: a chunk's logits (hidden rows
//! gathered, h·Wᵀ), its gradients (Gz·W scattered into ∂L/∂h, Gzᵀ·h summed into
//! ∂L/∂W) and ∂L/∂W's final rounding. The loss's steps are `loss/encode.rs`'s.

use super::{HeadGradients, HeadInputs, HeadPlan, MatrixView};
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
    /// `V × H` f32: ∂L/∂W's sum, where it does not go to the caller's buffer.
    pub grad_lm_head: Option<wgpu::Buffer>,
}

/// What the head's steps of one call share.
pub(crate) struct HeadCall<'c> {
    pub inputs: &'c HeadInputs<'c>,
    pub grads: &'c HeadGradients<'c>,
    pub head: &'c HeadPlan,
    pub bufs: &'c HeadBuffers,
}

impl PolicyLoss {
    /// The head's scratch, grown to `head`'s sizes.
    pub(super) fn head_buffers(&self, head: &HeadPlan) -> HeadBuffers {
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut guard.head;
        let n = head.shape.chunks.first().map_or(1, |c| c.1 - c.0).max(1);
        let h = head.hidden;
        let grow = |slot, label, items: u64| {
            let items = u32::try_from(items).expect("a head buffer fits one binding");
            super::super::encode::grow(self, slot, label, items, 4).clone()
        };
        let logits = grow(&mut s.logits, "head logits", n as u64 * head.stride as u64);
        let hidden = grow(&mut s.hidden, "head hidden", n as u64 * h as u64);
        let grad_hidden = grow(&mut s.grad_hidden, "head grad_hidden", n as u64 * h as u64);
        let grad_lm_head = head.shape.finish.then(|| {
            grow(
                &mut s.grad_lm_head,
                "head grad_lm_head",
                head.vocab as u64 * h as u64,
            )
        });
        HeadBuffers {
            logits,
            hidden,
            grad_hidden,
            grad_lm_head,
        }
    }
}

/// The head's scratch slots (in the loss's `Scratch`).
#[derive(Default)]
pub(crate) struct HeadScratch {
    logits: Option<(u32, wgpu::Buffer)>,
    hidden: Option<(u32, wgpu::Buffer)>,
    grad_hidden: Option<(u32, wgpu::Buffer)>,
    grad_lm_head: Option<(u32, wgpu::Buffer)>,
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

    /// The vocabulary blocks of W: first row, rows.
    fn blocks(&self) -> impl Iterator<Item = (u32, u32)> {
        let (v, b) = (self.head.vocab, self.head.block);
        (0..v)
            .step_by(b as usize)
            .map(move |v0| (v0, b.min(v - v0)))
    }

    /// W's rows `v0 ..`, as B of a product: `Wᵀ` (k over H, n over V) or `W` (k over
    /// V, n over H).
    fn lm_head(&self, v0: u32, transposed: bool) -> Operand<'_> {
        let w = &self.inputs.lm_head;
        let row = w.layout.row_stride;
        let (r, c) = if transposed { (1, row) } else { (row, 1) };
        Operand {
            arg: "lm_head",
            buffer: w.buffer,
            dtype: w.dtype,
            offset: w.layout.offset + v0 as u64 * row,
            row: r,
            col: c,
        }
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
        for (v0, n) in self.blocks() {
            let p = Product {
                m: b - a,
                n,
                k: self.head.hidden,
                a: self.dense("hidden", &self.bufs.hidden),
                b: self.lm_head(v0, true),
                c: &self.bufs.logits,
                c_offset: v0 as u64,
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
        (plan, scratch, flags): (&Plan<'_>, ScratchBufs<'_>, u32),
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
            for (i, (v0, n)) in self.blocks().enumerate() {
                let p = Product {
                    m: b - a,
                    n: h,
                    k: n,
                    a: logits(v0 as u64, stride, 1),
                    b: self.lm_head(v0, false),
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
        let Some(g) = &self.grads.lm_head else {
            return Ok(());
        };
        let (target, base, row) = match &self.bufs.grad_lm_head {
            Some(acc) => (acc, 0, h as u64),
            None => (g.buffer, g.layout.offset, g.layout.row_stride),
        };
        for (v0, n) in self.blocks() {
            let p = Product {
                m: n,
                n: h,
                k: b - a,
                a: logits(v0 as u64, 1, stride),
                b: self.dense("hidden", &self.bufs.hidden),
                c: target,
                c_offset: base + v0 as u64 * row,
                c_row: row,
                accumulate: c > 0,
            };
            matmul::record(&loss.ctx, encoder, &p)?;
        }
        Ok(())
    }

    /// ∂L/∂W's f32 sum rounded once into the caller's rows, a vocabulary block at a
    /// time.
    pub(crate) fn finish(
        &self,
        loss: &PolicyLoss,
        encoder: &mut wgpu::CommandEncoder,
        scratch: &ScratchBufs<'_>,
    ) -> Result<()> {
        let (Some(g), Some(acc)) = (&self.grads.lm_head, &self.bufs.grad_lm_head) else {
            return Ok(());
        };
        for (v0, n) in self.blocks() {
            let scatter = Move {
                strided: self.strided("grad_lm_head", g),
                first: v0,
                rows: n,
                dense: acc,
                dense_offset: v0 as u64 * self.head.hidden as u64,
                mask: None,
                scatter: true,
            };
            head_rows::record(&loss.ctx, encoder, scratch.spare, &scatter)?;
        }
        Ok(())
    }
}
