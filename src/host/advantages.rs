//! Advantages of host rewards (docs/MATH.md#advantages-from-rewards), computed on the
//! device.

use crate::config::AdvantageEstimator;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::advantages::check_groups as check;
use crate::view::F32View;

impl Context {
    /// Advantages of host rewards, computed on the device: one per reward, groups of
    /// `group_size` consecutive rewards answering one prompt
    /// (docs/MATH.md#advantages-from-rewards). An `Err` where the rewards do not split
    /// into whole groups.
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
