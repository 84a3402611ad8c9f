//! Host side of `shaders/select.wgsl`: the batch-wide choices between the rows'
//! statistics and the loss (rollout weights, the top-entropy mask and its renormalised
//! weights, the covariance selection of `clip_cov` / `kl_cov`).

use super::prepare::PartRows;
use super::{check_loops, dispatch_single, lane_steps, Kernel, ScratchBufs, Teams};
use crate::config::{LossConfig, PolicyLossMode, RolloutLevel, RolloutMode};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::select::*;

/// The phases that run part by part.
pub(crate) const PER_PART: u32 = ROLLOUT | RENORM_GATHER;

/// The phases a configuration needs.
pub(crate) fn phases(cfg: &LossConfig) -> u32 {
    let mut p = 0;
    if cfg.rollout_correction.is_some() {
        p |= ROLLOUT;
    }
    if cfg.top_entropy_quantile.is_some() || cfg.mode.selects_tokens() {
        p |= SELECT;
    }
    if cfg.top_entropy_renormalize {
        p |= RENORM_GATHER | RENORM_WEIGHTS;
    }
    p
}

/// Every row and sequence of the call, and `L_norm`.
#[derive(Clone, Copy)]
pub(crate) struct Totals {
    pub rows: u32,
    pub seqs: u32,
    pub l_norm: f32,
    /// The call has old log-probs.
    pub has_old: bool,
}

/// Records one launch of `phases` for `part` (its fields matter to the per-part phases).
pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    cfg: &LossConfig,
    part: &PartRows<'_>,
    totals: Totals,
    phases: u32,
    scratch: &ScratchBufs<'_>,
) -> Result<()> {
    let teams = Teams::new(part.seqs, part.rows_per_seq);
    check_select_loops(ctx, part, totals, phases)?;
    let params = params(cfg, part, totals, phases, teams);
    dispatch_single(ctx, encoder, Kernel::Select, &params, scratch.batch_wide())
}

/// A lane's loops: the per-part phases walk the part's rows (and sum its sequences),
/// the selection makes up to eleven passes over every row, the weights two over every
/// sequence.
fn check_select_loops(
    ctx: &Context,
    part: &PartRows<'_>,
    totals: Totals,
    phases: u32,
) -> Result<()> {
    let teams = Teams::new(part.seqs, part.rows_per_seq);
    let mut steps = 0;
    if phases & ROLLOUT != 0 {
        steps += teams.steps(part.rows_per_seq) + lane_steps(part.rows as u64);
    }
    if phases & SELECT != 0 {
        steps += 12 * lane_steps(totals.rows as u64) + 8 * 8;
    }
    if phases & RENORM_GATHER != 0 {
        steps += teams.steps(part.rows_per_seq);
    }
    if phases & RENORM_WEIGHTS != 0 {
        steps += 2 * lane_steps(totals.seqs as u64);
    }
    check_loops(
        ctx,
        "logits",
        "select (the batch-wide token choices)",
        steps,
    )
}

fn params(
    cfg: &LossConfig,
    part: &PartRows<'_>,
    totals: Totals,
    phases: u32,
    teams: Teams,
) -> Params {
    let rc = cfg.rollout_correction;
    Params {
        part: part.span(),
        all_rows: totals.rows,
        all_seqs: totals.seqs,
        phases,
        cov: match cfg.mode {
            PolicyLossMode::KlCov => COV_KL,
            PolicyLossMode::ClipCov => COV_CLIP,
            _ => COV_NONE,
        },
        entropy: match (cfg.top_entropy_quantile, cfg.top_entropy_renormalize) {
            (None, _) => ENTROPY_NONE,
            (Some(_), false) => ENTROPY_QUANTILE,
            (Some(_), true) => ENTROPY_TOP_K,
        },
        has_old: totals.has_old as u32,
        level: match rc.map(|r| r.level) {
            Some(RolloutLevel::Sequence) => LEVEL_SEQUENCE,
            Some(RolloutLevel::Geometric) => LEVEL_GEOMETRIC,
            _ => LEVEL_TOKEN,
        },
        rollout_mode: match rc.map(|r| r.mode) {
            Some(RolloutMode::Mask) => MODE_MASK,
            _ => MODE_TRUNCATE,
        },
        c_lo: rc.map_or(0.0, |r| r.lower()),
        c_hi: rc.map_or(0.0, |r| r.threshold),
        rho: cfg.top_entropy_quantile.unwrap_or(1.0),
        cov_ratio: match cfg.mode {
            PolicyLossMode::ClipCov => cfg.clip_cov_ratio,
            _ => cfg.kl_cov_ratio,
        },
        cov_lb: cfg.clip_cov_lb,
        cov_ub: cfg.clip_cov_ub,
        seed: cfg.seed,
        clip_low: cfg.clip_ratio_low,
        clip_high: cfg.clip_ratio_high,
        agg_mode: super::agg_code(cfg.loss_agg_mode),
        count_empty: cfg.count_empty_sequences as u32,
        global_normalizer: cfg.global_normalizer.unwrap_or(0.0),
        l_norm: totals.l_norm,
        teams,
        ..bytemuck::Zeroable::zeroed()
    }
}
