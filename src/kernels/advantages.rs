//! Host side of `shaders/advantages.wgsl`.

use super::{check_loops, dispatch_single, f32_window, lane_steps, Kernel, Teams};
use crate::config::AdvantageEstimator;
use crate::context::Context;
use crate::error::{Error, Result};
pub(crate) use crate::shader::abi::advantages::*;
use crate::view::F32View;

pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    estimator: AdvantageEstimator,
    rewards: &F32View<'_>,
    n: u32,
    group: u32,
    out: &F32View<'_>,
) -> Result<()> {
    let limits = ctx.device().limits();
    let (in_bind, in_offset) = f32_window("rewards", rewards, n as u64, &limits)?;
    let (out_bind, out_offset) = f32_window("out", out, n as u64, &limits)?;
    let teams = Teams::new(n / group.max(1), group);
    // three passes: mean, variance, advantages
    let steps = match estimator {
        AdvantageEstimator::ReinforcePlusPlus => 3 * lane_steps(n as u64),
        // GPG counts the batch's non-zero rewards first
        AdvantageEstimator::Gpg => lane_steps(n as u64) + 3 * teams.steps(group),
        _ => 3 * teams.steps(group),
    };
    check_loops(ctx, "rewards", "advantages", steps)?;
    let params = Params {
        n,
        group,
        estimator: match estimator {
            AdvantageEstimator::Grpo => GRPO,
            AdvantageEstimator::GrpoNoStd => GRPO_NO_STD,
            AdvantageEstimator::Rloo => RLOO,
            AdvantageEstimator::ReinforcePlusPlus => REINFORCE_PP,
            AdvantageEstimator::Gpg => GPG,
        },
        in_offset,
        out_offset,
        teams,
        ..bytemuck::Zeroable::zeroed()
    };
    dispatch_single(
        ctx,
        encoder,
        Kernel::Advantages,
        &params,
        vec![super::entry(1, in_bind), super::entry(2, out_bind)],
    )
}

/// That `n` rewards split into groups of `group_size` (≥ 1): the check every
/// advantages call makes first, errors naming `group_size` or `rewards`.
pub fn check_groups(n: usize, group_size: u32) -> Result<()> {
    if group_size == 0 {
        return Err(Error::arg("group_size", "must be at least 1"));
    }
    if !n.is_multiple_of(group_size as usize) {
        return Err(Error::arg(
            "rewards",
            format!("{n} rewards do not split into groups of {group_size}"),
        ));
    }
    Ok(())
}

impl Context {
    /// Records the advantages of `n` rewards into `out` (n f32 values).
    pub fn record_advantages(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        estimator: AdvantageEstimator,
        rewards: &F32View<'_>,
        n: u32,
        group_size: u32,
        out: &F32View<'_>,
    ) -> Result<()> {
        check_groups(n as usize, group_size)?;
        rewards.validate("rewards", n)?;
        out.validate("out", n)?;
        if n == 0 {
            return Ok(());
        }
        record(self, encoder, estimator, rewards, n, group_size, out)
    }
}
