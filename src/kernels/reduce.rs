//! Host side of `shaders/reduce.wgsl`: the loss and metrics, and the per-row outputs.

use super::{check_loops, dispatch_single, entry, f32_window, lane_steps, whole, Kernel};
use crate::context::Context;
use crate::error::Result;
use crate::view::F32View;

/// Values the reduce kernel writes, in order.
pub(crate) const METRICS: u64 = 21;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    /// HAS_OLD | HAS_REF: the optional inputs rowin holds.
    inputs: u32,
    metrics_offset: u32,
    logp_offset: u32,
    entropy_offset: u32,
    write_rows: u32,
    has_rollout: u32,
    has_selection: u32,
}

/// select.wgsl's per-row results, and which of them there are (the buffer is a spare
/// one where there are none).
#[derive(Clone, Copy)]
pub(crate) struct Aux<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub rollout: bool,
    pub selection: bool,
}

/// Flags of `write_rows`: which per-row outputs the caller asked for.
const WRITE_LOGP: u32 = 1;
const WRITE_ENTROPY: u32 = 2;

/// Records the reduction over `rows` rows of scratch (every part's, in order), whose
/// rowin holds the optional `inputs` (prepare's `HAS_OLD | HAS_REF`); `spare` is a
/// small writable scratch buffer bound where the caller asked for no per-row output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record<'a>(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    rows: u32,
    inputs: u32,
    rowin: &wgpu::Buffer,
    rowout: &wgpu::Buffer,
    aux: Aux<'_>,
    spare: &'a wgpu::Buffer,
    metrics: &F32View<'a>,
    logp: Option<&F32View<'a>>,
    entropy: Option<&F32View<'a>>,
) -> Result<()> {
    check_loops(
        ctx,
        "logits",
        "reduce (the loss over every row)",
        lane_steps(rows as u64),
    )?;
    let limits = ctx.device().limits();
    let n = rows as u64;
    let window = |arg, v: &F32View<'a>, len: u64| f32_window(arg, v, len, &limits);
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
        has_rollout: aux.rollout as u32,
        has_selection: aux.selection as u32,
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
            whole(6, aux.buffer),
        ],
    )
}
