//! Host side of `shaders/advantages.wgsl`.

use super::abi::{wgsl_consts, wgsl_struct, Abi, COMMON, SHARED};
use super::{check_loops, dispatch_single, f32_window, lane_steps, Kernel, Teams};
use crate::advantages::AdvantageEstimator;
use crate::context::Context;
use crate::error::Result;
use crate::view::F32View;

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct Params {
        n: u32,
        group: u32,
        estimator: u32,
        in_offset: u32,
        out_offset: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
        /// lanes per group
        teams: Teams,
    }
}

wgsl_consts! {
    CONSTS;
    GRPO: u32 = 0;
    GRPO_NO_STD: u32 = 1;
    RLOO: u32 = 2;
    REINFORCE_PP: u32 = 3;
    GPG: u32 = 4;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL], CONSTS];

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
