//! Host side of `shaders/seq_terms.wgsl`: what each sequence's tokens share, per part
//! (sequence ratios, GMPO's and VESPO's sums, the off-policy mask, the gradient of a
//! sequence ratio through its mean).

use super::policy_loss::{clip_flags, clip_of, kl_code, mode_code, vespo_of};
use super::prepare::PartRows;
use super::{check_loops, dispatch_single, select, Kernel, ScratchBufs, Teams};
use crate::config::{LossConfig, PolicyLossMode};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::seq_terms::*;
use crate::shader::abi::{HAS_OLD, HAS_REF};

/// The sequence value a configuration needs in seqinfo.y.
fn kind(cfg: &LossConfig) -> u32 {
    match cfg.mode {
        PolicyLossMode::GeoMean => KIND_GEO,
        PolicyLossMode::Vespo => KIND_VESPO,
        _ if cfg.sequence_ratio() => KIND_RATIO,
        _ => KIND_NONE,
    }
}

/// Whether the policy term's gradient goes through the sequence ratio's mean (TRL's
/// sequence level for ppo_clip and sapo; cispo's weight is detached, gspo keeps its
/// per-token form).
pub(crate) fn policy_via_seq(cfg: &LossConfig) -> bool {
    cfg.importance_sampling_level == crate::config::ImportanceSamplingLevel::Sequence
        && matches!(cfg.mode, PolicyLossMode::PpoClip | PolicyLossMode::Sapo)
}

/// Whether the row kernel adds the sequence's addend to G: the policy's share above, or
/// the bias-corrected KL at a sequence ratio.
pub(crate) fn has_addend(cfg: &LossConfig) -> bool {
    policy_via_seq(cfg) || (cfg.bias_corrected_kl() && cfg.sequence_ratio())
}

fn flags(cfg: &LossConfig, part: &PartRows<'_>, renorm: bool) -> u32 {
    let phases = select::phases(cfg);
    let on = [
        (SEQ_HAS_Q, phases & select::ROLLOUT != 0),
        (SEQ_HAS_E, phases & select::SELECT != 0),
        (SEQ_OFF_POLICY, cfg.off_policy_mask_threshold.is_some()),
        (SEQ_SIGMA_ROLLOUT, part.inputs.rollout_logp.is_some()),
        (SEQ_ADD_POLICY, policy_via_seq(cfg)),
        (SEQ_ADD_KL, cfg.bias_corrected_kl() && cfg.sequence_ratio()),
        (SEQ_RENORM, renorm),
        (SEQ_VESPO_TOKEN, part.inputs.per_token_advantages),
    ];
    on.iter().filter(|f| f.1).fold(0, |acc, f| acc | f.0)
}

pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    cfg: &LossConfig,
    part: &PartRows<'_>,
    all_seqs: u32,
    scratch: &ScratchBufs<'_>,
) -> Result<()> {
    let teams = Teams::new(part.seqs, part.rows_per_seq);
    // two walks over each sequence's rows, three team sums
    check_loops(
        ctx,
        "logits",
        "seq_terms",
        2 * teams.steps(part.rows_per_seq),
    )?;
    let inputs = (part.inputs.old_logp.is_some() as u32 * HAS_OLD)
        | (part.inputs.ref_logp.is_some() as u32 * HAS_REF);
    let params = Params {
        part: part.span(),
        teams,
        clip: clip_of(cfg),
        vespo: vespo_of(cfg),
        kind: kind(cfg),
        flags: flags(cfg, part, cfg.top_entropy_renormalize),
        inputs,
        clip_flags: clip_flags(cfg),
        policy: mode_code(cfg.mode),
        kl_type: kl_code(cfg.kl_loss_type),
        all_seqs,
        kl_coef: cfg.kl_coef,
        tau_pos: cfg.tau_pos,
        tau_neg: cfg.tau_neg,
        threshold: cfg.off_policy_mask_threshold.unwrap_or(0.0),
        ..bytemuck::Zeroable::zeroed()
    };
    dispatch_single(
        ctx,
        encoder,
        Kernel::SeqTerms,
        &params,
        scratch.batch_wide(),
    )
}
