//! Host side of `shaders/reduce.wgsl`: the loss and metrics, and the per-row outputs.

use super::{
    check_loops, dispatch_single, entry, f32_window, lane_steps, whole, Kernel, ScratchBufs,
};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::reduce::*;
use crate::view::F32View;

/// Values the reduce kernel writes, in order.
pub(crate) const METRICS: u64 = METRICS_LEN as u64;

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
    pub reads_rollout: bool,
    pub off_policy: bool,
    /// VESPO_*
    pub vespo: u32,
}

/// Where the results go: the metrics, and the per-row outputs the caller asked for.
pub(crate) struct Out<'a, 'v> {
    pub metrics: &'a F32View<'v>,
    pub logprobs: Option<&'a F32View<'v>>,
    pub entropy: Option<&'a F32View<'v>>,
    pub lse: Option<&'a F32View<'v>>,
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
    let (metrics, logp, entropy, lse) = (out.metrics, out.logprobs, out.entropy, out.lse);
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
    // each per-row output the caller asked for, else the spare and its flag unset
    let mut write_rows = 0;
    let mut bind = |arg, view: Option<&F32View<'v>>, flag| match view {
        Some(v) if rows > 0 => {
            write_rows |= flag;
            window(arg, v, n)
        }
        _ => Ok((spare_bind(), 0)),
    };
    let (l_bind, logp_offset) = bind("outputs.logprobs", logp, WRITE_LOGP)?;
    let (e_bind, entropy_offset) = bind("outputs.entropy", entropy, WRITE_ENTROPY)?;
    let (s_bind, lse_offset) = bind("outputs.lse", lse, WRITE_LSE)?;
    let params = Params {
        rows,
        inputs,
        metrics_offset,
        logp_offset,
        entropy_offset,
        write_rows,
        has_rollout: call.rollout as u32,
        has_selection: call.selection as u32,
        reads_rollout: call.reads_rollout as u32,
        off_policy: call.off_policy as u32,
        vespo: call.vespo,
        lse_offset,
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
            entry(7, s_bind),
        ],
    )
}
