//! What a device's calls reuse: the loss objects (one per configuration, each with the
//! library's scratch buffers) and the crate's own buffers, so that a training step
//! allocates nothing once the shapes repeat.
//!
//! Reuse across calls is safe in queue order: each call's submission copies its inputs
//! in, runs, and copies its results out before the next submission starts.

use std::sync::{Arc, Mutex, PoisonError};

use wgpu_policy_loss::{wgpu, Context, LogProbConfig, LogProbs, LossConfig, PolicyLoss};

/// Configurations kept per device (the oldest goes first).
const LOSSES: usize = 16;

#[derive(Default)]
pub(crate) struct Pool {
    losses: Mutex<Vec<(LossConfig, Arc<PolicyLoss>)>>,
    logprobs: Mutex<Vec<(LogProbConfig, Arc<LogProbs>)>>,
    buffers: Mutex<Vec<(&'static str, wgpu::Buffer)>>,
}

impl Pool {
    /// The loss object of `config` (validated when first made).
    pub fn loss(
        &self,
        ctx: &Context,
        config: &LossConfig,
    ) -> wgpu_policy_loss::Result<Arc<PolicyLoss>> {
        let mut losses = self.losses.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, l)) = losses.iter().find(|(c, _)| c == config) {
            return Ok(l.clone());
        }
        let l = Arc::new(PolicyLoss::new(ctx, *config)?);
        if losses.len() == LOSSES {
            losses.remove(0);
        }
        losses.push((*config, l.clone()));
        Ok(l)
    }

    /// The log-prob primitive of `config` (validated when first made).
    pub fn logprobs(
        &self,
        ctx: &Context,
        config: &LogProbConfig,
    ) -> wgpu_policy_loss::Result<Arc<LogProbs>> {
        let mut all = self.logprobs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, l)) = all.iter().find(|(c, _)| c == config) {
            return Ok(l.clone());
        }
        let l = Arc::new(LogProbs::new(ctx, *config)?);
        if all.len() == LOSSES {
            all.remove(0);
        }
        all.push((*config, l.clone()));
        Ok(l)
    }

    /// The buffer `label` of at least `bytes` (a multiple of 4), made or grown on
    /// demand. Its contents are whatever the last call left.
    pub fn buffer(
        &self,
        ctx: &Context,
        label: &'static str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let bytes = bytes.div_ceil(4).max(1) * 4;
        let mut buffers = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, b)) = buffers
            .iter()
            .find(|(l, b)| *l == label && b.size() >= bytes && b.usage().contains(usage))
        {
            return b.clone();
        }
        buffers.retain(|(l, _)| *l != label);
        let b = ctx.buffer(label, bytes, usage);
        buffers.push((label, b.clone()));
        b
    }
}
