//! Host side of `shaders/prepare.wgsl`: per-row inputs gathered into one vec4, and the
//! aggregation weight factor of each sequence.

use super::{
    check_loops, dispatch, entry, f32_window, lane_steps, uniform, whole, Kernel, PipelineKey,
    Teams,
};
use crate::config::{LossAggMode, LossConfig};
use crate::context::Context;
use crate::error::Result;
use crate::view::F32View;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    rows_per_seq: u32,
    seqs: u32,
    agg_mode: u32,
    flags: u32,
    global_normalizer: f32,
    l_norm: f32,
    _pad: u32,
    mask_offset: u32,
    adv_offset: u32,
    old_offset: u32,
    ref_offset: u32,
    teams: Teams,
    _pad2: [u32; 2],
}

pub(crate) const HAS_OLD: u32 = 1;
pub(crate) const HAS_REF: u32 = 2;
const ADV_PER_TOKEN: u32 = 8;

/// The per-row inputs of the loss, already validated against `rows` and `seqs`.
pub(crate) struct RowInputs<'a> {
    pub mask: F32View<'a>,
    pub advantages: F32View<'a>,
    pub per_token_advantages: bool,
    pub old_logp: Option<F32View<'a>>,
    pub ref_logp: Option<F32View<'a>>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn record<'a>(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    config: &LossConfig,
    rows: u32,
    rows_per_seq: u32,
    seqs: u32,
    inputs: &RowInputs<'a>,
    rowin: &wgpu::Buffer,
    seqinfo: &wgpu::Buffer,
) -> Result<()> {
    let limits = ctx.device().limits();
    let n = rows as u64;
    let window = |arg, v: &F32View<'a>, len: u64| f32_window(arg, v, len, &limits);
    let (mask_bind, mask_offset) = window("mask", &inputs.mask, n)?;
    let adv_len = if inputs.per_token_advantages {
        n
    } else {
        seqs as u64
    };
    let (adv_bind, adv_offset) = window("advantages", &inputs.advantages, adv_len)?;
    let (old_bind, old_offset) = match &inputs.old_logp {
        Some(v) => window("old_logprobs", v, n)?,
        None => (mask_bind.clone(), 0),
    };
    let (ref_bind, ref_offset) = match &inputs.ref_logp {
        Some(v) => window("ref_logprobs", v, n)?,
        None => (mask_bind.clone(), 0),
    };
    let mut flags = 0;
    if inputs.old_logp.is_some() {
        flags |= HAS_OLD;
    }
    if inputs.ref_logp.is_some() {
        flags |= HAS_REF;
    }
    if inputs.per_token_advantages {
        flags |= ADV_PER_TOKEN;
    }
    let teams = Teams::new(seqs, rows_per_seq);
    let steps = lane_steps(rows as u64) + teams.steps(rows_per_seq) + lane_steps(seqs as u64);
    check_loops(
        ctx,
        "logits",
        "prepare (the per-row inputs of every row)",
        steps,
    )?;
    let params = Params {
        rows,
        rows_per_seq,
        seqs,
        agg_mode: match config.loss_agg_mode {
            LossAggMode::TokenMean => 0,
            LossAggMode::SeqMeanTokenMean => 1,
            LossAggMode::SeqMeanTokenSum => 2,
            LossAggMode::SeqMeanTokenSumNorm => 3,
        },
        flags,
        global_normalizer: config.global_normalizer.unwrap_or(0.0),
        l_norm: config.l_norm.unwrap_or(rows_per_seq as f32),
        _pad: 0,
        mask_offset,
        adv_offset,
        old_offset,
        ref_offset,
        teams,
        _pad2: [0; 2],
    };
    let pipeline = ctx.pipeline(PipelineKey::small(Kernel::Prepare, ctx.paths()))?;
    let uniform = uniform(ctx, "prepare params", &params);
    dispatch(
        ctx,
        encoder,
        "prepare",
        &pipeline,
        &[
            whole(0, &uniform),
            entry(1, mask_bind),
            entry(2, adv_bind),
            entry(3, old_bind),
            entry(4, ref_bind),
            whole(5, rowin),
            whole(6, seqinfo),
        ],
        (1, 1),
    )
}
