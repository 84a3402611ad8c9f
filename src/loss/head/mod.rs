//! The fused linear head (docs/MATH.md#the-fused-linear-head): the policy loss straight
//! from the last hidden states `h [rows, H]` and the lm-head weight `W [V, H]`, the
//! logits `x = h·Wᵀ` made `chunk` rows at a time into one f32 buffer and never held
//! whole.
//!
//! ```text
//! prepare            per-row inputs, per-sequence weights (as for logits)
//! [per chunk]        where a batch-wide term needs every row's statistics first:
//!   gather + matmul    the chunk's hidden rows, its logits h·Wᵀ
//!   policy_loss        its rows' statistics (PHASE_STATS)
//! select, seq_terms as for logits
//! per chunk
//!   gather + matmul    the chunk's logits (again, where the statistics came first)
//!   policy_loss        loss terms; Gz over the chunk buffer, in place, in f32
//!   matmul + scatter   ∂L/∂h = Gz·W for the chunk's rows
//!   matmul             ∂L/∂W (+)= Gzᵀ·h, the chunks in order (no float atomics)
//! reduce             loss and metrics
//! [scatter]          ∂L/∂W's f32 sum rounded once, where it is not f32 in place
//! ```
//!
//! Extra memory: the chunk's logits (`chunk × V` f32), two `chunk × H` f32 matrices,
//! the loss's O(rows) scratch, and ∂L/∂W's f32 sum (`V × H`) only where the caller's
//! ∂L/∂W is 16-bit or not evenly strided, in as many buffers as the device's largest
//! buffer needs. W and ∂L/∂W may come in vocabulary blocks ([`VocabBlocks`]); the
//! matmuls take the vocabulary a segment at a time, inside one block of each and one
//! binding.

mod encode;
mod plan;
mod views;

pub(crate) use encode::{HeadCall, HeadScratch};
use plan::{HeadDims, Segment};
pub use views::{HeadGradients, HeadInputs, MatrixView, VocabBlocks};

use super::schedule::HeadShape;
use super::{Gradient, LossInputs, LossOutputs, LossPart, PolicyLoss};
use crate::error::Result;
use crate::view::{DType, LogitsView, RowLayout};

/// Bytes of logits the default chunk holds at most (and the binding limit, if lower).
const DEFAULT_CHUNK_BYTES: u64 = 256 << 20;

/// The matmul's tile: chunks and vocabulary blocks are whole tiles where they can be.
const TILE: u32 = 128;

/// The head's shape, checked: what the schedule and the encoder need.
pub(crate) struct HeadPlan {
    pub shape: HeadShape,
    /// V, H, and the chunk buffer's row stride (V rounded up to groups of eight).
    pub vocab: u32,
    pub hidden: u32,
    pub stride: u32,
    /// The vocabulary in the order the matmuls take it.
    pub segments: Vec<Segment>,
    /// ∂L/∂W's f32 sum in the scratch: each buffer's first row and rows.
    pub sums: Vec<(u32, u32)>,
}

impl PolicyLoss {
    /// Device memory a call of [`PolicyLoss::record_head`] with these inputs may
    /// allocate, in bytes: the chunk's logits (`chunk × V` f32; V rounded up to a
    /// multiple of 8), two `chunk × H` f32 matrices, `V × H` f32 where ∂L/∂W is 16-bit
    /// or strided (in several buffers where one cannot hold it), and the loss's O(rows)
    /// scratch ([`PolicyLoss::scratch_bytes`]). Never `rows × V`. `Err`, naming the
    /// argument and the sizes, where a buffer the call needs cannot exist on this
    /// device.
    pub fn scratch_bytes_head(
        &self,
        inputs: &HeadInputs<'_>,
        grads: &HeadGradients<'_>,
    ) -> Result<u64> {
        let head = self.head_plan(inputs, grads)?;
        let rps = inputs.hidden.layout.rows_per_seq;
        let shape = super::schedule::PartShape {
            rows: inputs.hidden.rows,
            layout: chunk_layout(inputs.hidden.rows, rps, &head),
            vocab: head.vocab,
            dtype: DType::F32,
            targets: inputs.targets.layout,
            grad: None,
            has_old: inputs.old_logprobs.is_some(),
        };
        Ok(self.schedule_for(&[shape], Some(&head.shape))?.bytes())
    }

    /// [`PolicyLoss::scratch_bytes_head`] of dense `[rows, hidden]` hidden states in
    /// sequences of `rows_per_seq` and a dense `[vocab, hidden]` weight of `dtype`,
    /// dense targets and old log-probs, both gradients dense in `grad` (none: the
    /// forward), and `chunk_rows` (as [`HeadInputs::chunk_rows`]).
    pub fn scratch_bytes_head_dense(
        &self,
        (rows, rows_per_seq): (u32, u32),
        (vocab, hidden): (u32, u32),
        dtype: DType,
        grad: Option<DType>,
        chunk_rows: Option<u32>,
    ) -> Result<u64> {
        let head = self.plan_dims(&HeadDims {
            rows,
            hidden,
            w_blocks: vec![vocab],
            w_row_bytes: hidden as u64 * dtype.size(),
            g_row_bytes: grad.map(|g| hidden as u64 * g.size()),
            grad_hidden: grad.is_some(),
            grad_lm_head: grad.map(|g| vec![(vocab, g == DType::F32)]),
            chunk_rows,
        })?;
        let rps = rows_per_seq.max(1);
        let shape = super::schedule::PartShape {
            rows,
            layout: chunk_layout(rows, rps, &head),
            vocab,
            dtype: DType::F32,
            targets: RowLayout {
                offset: 0,
                row_stride: 1,
                rows_per_seq: rps,
                seq_stride: rps as u64,
            },
            grad: None,
            has_old: true,
        };
        Ok(self.schedule_for(&[shape], Some(&head.shape))?.bytes())
    }

    /// The default chunk of a dense head call of these shapes (rows of logits held at
    /// once), as [`PolicyLoss::scratch_bytes_head_dense`] plans it.
    #[cfg(feature = "tools")]
    pub(crate) fn head_chunk_dense(
        &self,
        rows: u32,
        vocab: u32,
        hidden: u32,
        dtype: DType,
    ) -> Result<u32> {
        let head = self.plan_dims(&HeadDims {
            rows,
            hidden,
            w_blocks: vec![vocab],
            w_row_bytes: hidden as u64 * dtype.size(),
            g_row_bytes: Some(hidden as u64 * 4),
            grad_hidden: true,
            grad_lm_head: Some(vec![(vocab, true)]),
            chunk_rows: None,
        })?;
        Ok(head.shape.chunks.first().map_or(0, |c| c.1 - c.0))
    }

    /// Records the loss from hidden states and the lm-head weight (and the gradients
    /// `grads` asks for) into `encoder`, as [`PolicyLoss::record`] does from logits:
    /// the loss, metrics, per-row log-probs and entropies land in `outputs`, ∂L/∂h and
    /// ∂L/∂W in `grads`. The logits are made [`HeadInputs::chunk_rows`] rows at a
    /// time; the results depend on the chunk only through f32 rounding of ∂L/∂W's sum
    /// over chunks (the chunks are summed in order: bitwise reproducible).
    pub fn record_head(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &HeadInputs<'_>,
        grads: &HeadGradients<'_>,
        outputs: &LossOutputs<'_>,
    ) -> Result<()> {
        let head = self.head_plan(inputs, grads)?;
        let bufs = self.head_buffers(&head)?;
        let plan = self.plan_head(inputs, grads, &head, &bufs.logits, outputs)?;
        let call = HeadCall {
            inputs,
            grads,
            head: &head,
            bufs: &bufs,
        };
        self.encode(encoder, &plan, outputs, None, Some(&call))
    }

    /// The validated plan of a head call: its one part's logits are the chunk buffer,
    /// over every row (the row kernel is handed one chunk at a time).
    fn plan_head<'a>(
        &self,
        inputs: &HeadInputs<'a>,
        grads: &HeadGradients<'_>,
        head: &HeadPlan,
        chunk_buffer: &'a wgpu::Buffer,
        outputs: &LossOutputs<'_>,
    ) -> Result<super::validate::Plan<'a>> {
        let logits = LogitsView {
            buffer: chunk_buffer,
            dtype: DType::F32,
            rows: inputs.hidden.rows,
            vocab: head.vocab,
            layout: chunk_layout(inputs.hidden.rows, inputs.hidden.layout.rows_per_seq, head),
        };
        let wants = grads.hidden.is_some() || grads.lm_head.is_some();
        let part = LossPart {
            inputs: LossInputs {
                logits,
                targets: inputs.targets,
                mask: inputs.mask,
                advantages: inputs.advantages,
                old_logprobs: inputs.old_logprobs,
                ref_logprobs: inputs.ref_logprobs,
                temperatures: inputs.temperatures,
                kept: inputs.kept,
            },
            gradient: if wants {
                Gradient::InPlace
            } else {
                Gradient::None
            },
            rollout_logprobs: inputs.rollout_logprobs,
        };
        self.plan_with(&[part], Some(outputs), None, Some(&head.shape))
    }
}

/// The rows of the whole batch's logits as the row kernel numbers them: dense f32 rows
/// of the chunk buffer's stride, in hidden's sequences.
fn chunk_layout(rows: u32, rps: u32, head: &HeadPlan) -> RowLayout {
    RowLayout {
        offset: 0,
        row_stride: head.stride as u64,
        rows_per_seq: rps,
        seq_stride: rps.min(rows).max(1) as u64 * head.stride as u64,
    }
}
