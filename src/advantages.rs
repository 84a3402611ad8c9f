//! Advantages from per-sequence rewards (SPEC "Advantages"): groups of `group_size`
//! consecutive responses to one prompt.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::view::F32View;

/// How rewards become advantages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdvantageEstimator {
    /// `(R_i − mean_g) / (std_g + 1e-6)`, std unbiased; a group of one gets 0.
    Grpo,
    /// `R_i − mean_g` (Dr. GRPO).
    GrpoNoStd,
    /// `R_i − mean of the other G − 1` (a group of one gets 0).
    Rloo,
    /// Whitened over the whole batch: `(R_i − mean) / (std + 1e-6)`, std unbiased.
    ReinforcePlusPlus,
    /// GPG: `α·(R_i − mean_g)`, `α = B / max(#{i : R_i ≠ 0}, 1)` over the batch's B
    /// rewards; a group of one gets 0.
    Gpg,
}

impl AdvantageEstimator {
    pub const ALL: [AdvantageEstimator; 5] = [
        Self::Grpo,
        Self::GrpoNoStd,
        Self::Rloo,
        Self::ReinforcePlusPlus,
        Self::Gpg,
    ];
}

impl std::str::FromStr for AdvantageEstimator {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "grpo" => Ok(Self::Grpo),
            "grpo_no_std" | "dr_grpo" => Ok(Self::GrpoNoStd),
            "rloo" => Ok(Self::Rloo),
            "reinforce_pp" | "reinforce_plus_plus" => Ok(Self::ReinforcePlusPlus),
            "gpg" => Ok(Self::Gpg),
            _ => Err(Error::arg(
                "estimator",
                format!("`{s}` is not one of grpo, grpo_no_std, rloo, reinforce_pp, gpg"),
            )),
        }
    }
}

fn check(n: usize, group_size: u32) -> Result<()> {
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
        check(n as usize, group_size)?;
        rewards.validate("rewards", n)?;
        out.validate("out", n)?;
        if n == 0 {
            return Ok(());
        }
        crate::kernels::advantages::record(self, encoder, estimator, rewards, n, group_size, out)
    }

    /// Advantages of host rewards, computed on the device.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn advantages(
        &self,
        estimator: AdvantageEstimator,
        rewards: &[f32],
        group_size: u32,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.advantages_async(estimator, rewards, group_size))
    }

    /// [`Context::advantages`] without blocking (the browser's form).
    pub async fn advantages_async(
        &self,
        estimator: AdvantageEstimator,
        rewards: &[f32],
        group_size: u32,
    ) -> Result<Vec<f32>> {
        check(rewards.len(), group_size)?;
        let n = u32::try_from(rewards.len()).map_err(|_| Error::arg("rewards", "too many"))?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let r = self.upload("rewards", bytemuck::cast_slice(rewards));
        let out = self.upload("advantages", &vec![0u8; rewards.len() * 4]);
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        self.record_advantages(
            &mut encoder,
            estimator,
            &F32View::new(&r),
            n,
            group_size,
            &F32View::new(&out),
        )?;
        Ok(self
            .read_f32s_async(encoder, &[&out], rewards.len())
            .await?
            .remove(0))
    }
}
