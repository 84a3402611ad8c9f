//! Host side of `shaders/reduce.wgsl`: the loss and metrics, and the per-row outputs.

use super::abi::{wgsl_consts, wgsl_struct, Abi, COMMON, SHARED};
use super::{
    check_loops, dispatch_single, entry, f32_window, lane_steps, whole, Kernel, ScratchBufs,
};
use crate::context::Context;
use crate::error::{Result, RowInput};
use crate::view::F32View;

wgsl_consts! {
    CONSTS;
    /// The slots of the metrics buffer, as `Metrics::from_slice` reads them; a row or
    /// code is stored as its u32 bits (a row 0xffffffff where there is none).
    pub(crate) M_LOSS: u32 = 0;
    pub(crate) M_PG_CLIPFRAC: u32 = 1;
    pub(crate) M_PG_CLIPFRAC_LOWER: u32 = 2;
    pub(crate) M_PPO_KL: u32 = 3;
    pub(crate) M_KL: u32 = 4;
    pub(crate) M_ENTROPY_MEAN: u32 = 5;
    pub(crate) M_NONFINITE_ROWS: u32 = 6;
    pub(crate) M_MASK_SUM: u32 = 7;
    pub(crate) M_INVALID_TARGET_ROW: u32 = 8;
    pub(crate) M_INVALID_TARGET_ID: u32 = 9;
    pub(crate) M_COV_SELECTED_FRAC: u32 = 10;
    pub(crate) M_ENTROPY_MASK_FRAC: u32 = 11;
    pub(crate) M_ROLLOUT_IS_MEAN: u32 = 12;
    pub(crate) M_ROLLOUT_IS_MIN: u32 = 13;
    pub(crate) M_ROLLOUT_IS_MAX: u32 = 14;
    pub(crate) M_ROLLOUT_IS_CLIPFRAC: u32 = 15;
    pub(crate) M_ROLLOUT_LOGP_DIFF_MAX: u32 = 16;
    pub(crate) M_INVALID_INPUT_ROWS: u32 = 17;
    pub(crate) M_INVALID_INPUT_ROW: u32 = 18;
    pub(crate) M_INVALID_INPUT_TENSOR: u32 = 19;
    pub(crate) M_INVALID_INPUT_VALUE: u32 = 20;
    /// Values the reduce kernel writes.
    pub(crate) METRICS_LEN: u32 = 21;
    /// The tensor of a row's first bad input: 0 for none, else RowInput's code.
    BAD_NONE: u32 = 0;
    BAD_MASK: u32 = RowInput::Mask.code();
    BAD_ADVANTAGES: u32 = RowInput::Advantages.code();
    BAD_OLD: u32 = RowInput::OldLogprobs.code();
    BAD_REF: u32 = RowInput::RefLogprobs.code();
    BAD_ROLLOUT: u32 = RowInput::RolloutLogprobs.code();
    /// Flags of `write_rows`: which per-row outputs the caller asked for.
    WRITE_LOGP: u32 = 1;
    WRITE_ENTROPY: u32 = 2;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL], CONSTS];

/// Values the reduce kernel writes, in order.
pub(crate) const METRICS: u64 = METRICS_LEN as u64;

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct Params {
        rows: u32,
        /// HAS_OLD, HAS_REF (prelude.wgsl): the optional inputs rowin holds
        inputs: u32,
        metrics_offset: u32,
        logp_offset: u32,
        entropy_offset: u32,
        write_rows: u32,
        /// select.wgsl ran: rowaux holds the rollout weights, the selection and the mask
        has_rollout: u32,
        has_selection: u32,
    }
}

/// One reduction: over `rows` rows of scratch (every part's, in order), whose rowin
/// holds the optional `inputs` (prepare's `HAS_OLD | HAS_REF`), and select.wgsl's
/// per-row results in `aux` where `rollout` or `selection` says there are any.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub rows: u32,
    pub inputs: u32,
    pub aux: &'a wgpu::Buffer,
    pub rollout: bool,
    pub selection: bool,
}

/// Where the results go: the metrics, and the per-row outputs the caller asked for.
pub(crate) struct Out<'a, 'v> {
    pub metrics: &'a F32View<'v>,
    pub logprobs: Option<&'a F32View<'v>>,
    pub entropy: Option<&'a F32View<'v>>,
}

/// Records the reduction; the scratch's spare is bound where the caller asked for no
/// per-row output.
pub(crate) fn record<'v>(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    call: &Call<'_>,
    scratch: &ScratchBufs<'v>,
    out: &Out<'_, 'v>,
) -> Result<()> {
    let (rows, inputs, aux) = (call.rows, call.inputs, call.aux);
    let (rowin, rowout, spare) = (scratch.rowin, scratch.rowout, scratch.spare);
    let (metrics, logp, entropy) = (out.metrics, out.logprobs, out.entropy);
    check_loops(
        ctx,
        "logits",
        "reduce (the loss over every row)",
        lane_steps(rows as u64),
    )?;
    let limits = ctx.device().limits();
    let n = rows as u64;
    let window = |arg, v: &F32View<'v>, len: u64| f32_window(arg, v, len, &limits);
    let (m_bind, metrics_offset) = window("outputs.metrics", metrics, METRICS)?;
    let spare_bind = || wgpu::BufferBinding {
        buffer: spare,
        offset: 0,
        size: None,
    };
    let mut write_rows = 0;
    let (l_bind, logp_offset) = match logp {
        Some(v) if rows > 0 => {
            write_rows |= WRITE_LOGP;
            window("outputs.logprobs", v, n)?
        }
        _ => (spare_bind(), 0),
    };
    let (e_bind, entropy_offset) = match entropy {
        Some(v) if rows > 0 => {
            write_rows |= WRITE_ENTROPY;
            window("outputs.entropy", v, n)?
        }
        _ => (spare_bind(), 0),
    };
    let params = Params {
        rows,
        inputs,
        metrics_offset,
        logp_offset,
        entropy_offset,
        write_rows,
        has_rollout: call.rollout as u32,
        has_selection: call.selection as u32,
    };
    dispatch_single(
        ctx,
        encoder,
        Kernel::Reduce,
        &params,
        vec![
            whole(1, rowin),
            whole(2, rowout),
            entry(3, m_bind),
            entry(4, l_bind),
            entry(5, e_bind),
            whole(6, aux),
        ],
    )
}
