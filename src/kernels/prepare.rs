//! Host side of `shaders/prepare.wgsl`: per-row inputs gathered into one vec4, each
//! sequence's token count, and the aggregation weight factor of each sequence.

use super::{
    check_loops, dispatch_single, entry, f32_window, lane_steps, whole, Kernel, ScratchBufs, Teams,
};
use crate::config::LossConfig;
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::prepare::*;
use crate::view::F32View;

use crate::shader::abi::PartSpan;
pub(crate) use crate::shader::abi::{HAS_OLD, HAS_REF};

/// The per-row inputs of the loss, already validated against `rows` and `seqs`.
#[derive(Clone, Copy)]
pub(crate) struct RowInputs<'a> {
    pub mask: F32View<'a>,
    pub advantages: F32View<'a>,
    pub per_token_advantages: bool,
    pub old_logp: Option<F32View<'a>>,
    pub ref_logp: Option<F32View<'a>>,
    /// The sampler's log-probs, for the rollout correction.
    pub rollout_logp: Option<F32View<'a>>,
    /// The sampler's per-row temperatures (the row kernels read them where they are).
    pub temperatures: Option<F32View<'a>>,
    /// The sampler's given kept sets (kept_partials.wgsl reads them).
    pub kept: Option<crate::view::KeptView<'a>>,
    /// The log-prob primitive's call: the advantages, old and ref log-probs are its
    /// upstream a, b and c.
    pub primitive: bool,
}

/// One part's rows: its inputs, its shape, and where its rows and sequences start in
/// the scratch buffers (the parts of a call one after the other).
#[derive(Clone, Copy)]
pub(crate) struct PartRows<'a> {
    pub inputs: RowInputs<'a>,
    pub rows: u32,
    /// Clamped to `rows`.
    pub rows_per_seq: u32,
    pub seqs: u32,
    pub part_row: u32,
    pub part_seq: u32,
}

impl PartRows<'_> {
    /// The part as the uniform blocks of prepare, seq_terms and select hold it.
    pub(crate) fn span(&self) -> PartSpan {
        PartSpan {
            rows: self.rows,
            rows_per_seq: self.rows_per_seq,
            seqs: self.seqs,
            part_row: self.part_row,
            part_seq: self.part_seq,
            ..bytemuck::Zeroable::zeroed()
        }
    }
}

/// Every sequence of the call, for the weights: how many, and `L_norm`.
#[derive(Clone, Copy)]
pub(crate) struct AllSeqs {
    pub seqs: u32,
    pub l_norm: f32,
}

pub(crate) fn record<'a>(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    config: &LossConfig,
    part: &PartRows<'a>,
    phase: u32,
    all: AllSeqs,
    scratch: &ScratchBufs<'_>,
) -> Result<()> {
    let (rowin, seqinfo, rowaux) = (scratch.rowin, scratch.seqinfo, scratch.rowaux);
    let limits = ctx.device().limits();
    let inputs = &part.inputs;
    let (rows, seqs) = (part.rows, part.seqs);
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
    let (rollout_bind, rollout_offset) = match &inputs.rollout_logp {
        Some(v) => window("rollout_logprobs", v, n)?,
        None => (mask_bind.clone(), 0),
    };
    let flags = input_flags(config, inputs);
    let teams = Teams::new(seqs, part.rows_per_seq);
    check_prepare_loops(ctx, part, phase, all, teams)?;
    let params = Params {
        part: part.span(),
        agg_mode: super::agg_code(config.loss_agg_mode),
        flags,
        global_normalizer: config.global_normalizer.unwrap_or(0.0),
        l_norm: all.l_norm,
        phase,
        mask_offset,
        adv_offset,
        old_offset,
        ref_offset,
        all_seqs: all.seqs,
        rollout_offset,
        teams,
        ..bytemuck::Zeroable::zeroed()
    };
    dispatch_single(
        ctx,
        encoder,
        Kernel::Prepare,
        &params,
        vec![
            entry(1, mask_bind),
            entry(2, adv_bind),
            entry(3, old_bind),
            entry(4, ref_bind),
            whole(5, rowin),
            whole(6, seqinfo),
            entry(7, rollout_bind),
            whole(8, rowaux),
        ],
    )
}

/// Which optional inputs the part has, and how its advantages and empty sequences count.
fn input_flags(config: &LossConfig, inputs: &RowInputs<'_>) -> u32 {
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
    if config.count_empty_sequences {
        flags |= COUNT_EMPTY;
    }
    if inputs.rollout_logp.is_some() {
        flags |= HAS_ROLLOUT;
    }
    if inputs.primitive {
        flags |= PRIMITIVE;
    }
    flags
}

/// A lane's loops: the gather walks the part's rows and sums its sequences' token
/// counts in teams; the weights walk every sequence twice.
fn check_prepare_loops(
    ctx: &Context,
    part: &PartRows<'_>,
    phase: u32,
    all: AllSeqs,
    teams: Teams,
) -> Result<()> {
    let mut steps = 0;
    if phase & GATHER != 0 {
        steps += lane_steps(part.rows as u64) + teams.steps(part.rows_per_seq);
    }
    if phase & WEIGHTS != 0 {
        steps += 2 * lane_steps(all.seqs as u64);
    }
    check_loops(
        ctx,
        "logits",
        "prepare (the per-row inputs of every row)",
        steps,
    )
}
