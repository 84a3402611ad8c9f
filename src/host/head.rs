//! The fused linear head on host slices: upload, record, read back.

use super::{HostGrad, HostLogits, HostLoss, HostPart};
use crate::config::LossConfig;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::loss::{
    Advantages, HeadGradients, HeadInputs, LossBuffers, MatrixView, Metrics, PolicyLoss,
};
use crate::view::{DType, F32View, TargetsView};
use crate::HostBatch;

/// One batch on the host for [`Context::policy_loss_head`]: hidden states and the
/// lm-head weight instead of logits.
#[derive(Clone, Copy, Debug)]
pub struct HostHead<'a> {
    /// `rows × hidden_dim`, row-major.
    pub hidden: HostLogits<'a>,
    /// `V × hidden_dim`, row-major, in hidden's dtype (`nn.Linear(H, V).weight`).
    pub lm_head: HostLogits<'a>,
    pub hidden_dim: u32,
    /// Rows per sequence (S); `None` for one sequence of all rows.
    pub rows_per_seq: Option<u32>,
    pub targets: &'a [u32],
    pub mask: &'a [f32],
    /// One per sequence, or one per row.
    pub advantages: &'a [f32],
    pub old_logprobs: Option<&'a [f32]>,
    pub ref_logprobs: Option<&'a [f32]>,
    pub rollout_logprobs: Option<&'a [f32]>,
    /// Rows of logits held at once ([`HeadInputs::chunk_rows`]).
    pub chunk_rows: Option<u32>,
}

/// Everything [`Context::policy_loss_head`] computes, read back: the loss's outputs
/// (no gradient of logits: there are none) and the head's gradients.
#[derive(Clone, Debug, PartialEq)]
pub struct HostHeadLoss {
    pub loss: HostLoss,
    /// `rows × H` and `V × H`, in the asked dtype.
    pub grad_hidden: Option<HostGrad>,
    pub grad_lm_head: Option<HostGrad>,
}

impl HostHead<'_> {
    /// The shape checks of a host batch, and its per-row values ([`HostPart::check`]).
    fn check(&self, config: &LossConfig) -> Result<(u32, u32, u32, bool)> {
        let h = self.hidden_dim;
        if h == 0 {
            return Err(Error::arg("hidden_dim", "must be at least 1"));
        }
        if self.lm_head.dtype() != self.hidden.dtype() {
            return Err(Error::arg("lm_head", "needs hidden's dtype"));
        }
        for (arg, len) in [
            ("hidden", self.hidden.len()),
            ("lm_head", self.lm_head.len()),
        ] {
            if !len.is_multiple_of(h as usize) {
                return Err(Error::arg(
                    arg,
                    format!("length {len} is not a multiple of H = {h}"),
                ));
            }
        }
        let vocab = u32::try_from(self.lm_head.len() / h as usize)
            .map_err(|_| Error::arg("lm_head", "too many rows"))?;
        let part = HostPart {
            batch: HostBatch {
                logits: self.hidden,
                vocab: h,
                rows_per_seq: self.rows_per_seq,
                targets: self.targets,
                mask: self.mask,
                advantages: self.advantages,
                old_logprobs: self.old_logprobs,
                ref_logprobs: self.ref_logprobs,
            },
            rollout_logprobs: self.rollout_logprobs,
        };
        let shape = part.check_at(config, 0).map_err(|e| match e {
            Error::InvalidArgument {
                arg: "logits",
                reason,
            } => Error::InvalidArgument {
                arg: "hidden",
                reason: reason.replace("logits rows", "hidden rows"),
            },
            other => other,
        })?;
        Ok((shape.rows, shape.rows_per_seq, vocab, shape.per_token))
    }
}

impl Context {
    /// Submits a head call and reads back its outputs and `grads` (buffer, bytes).
    async fn read_head(
        &self,
        encoder: wgpu::CommandEncoder,
        out: &LossBuffers,
        (rows, vocab): (u32, u32),
        grads: &[(&wgpu::Buffer, u64)],
        grad_dtype: Option<DType>,
    ) -> Result<HostHeadLoss> {
        let mut list = vec![
            (&out.metrics, Metrics::LEN as u64 * 4),
            (&out.logprobs, rows as u64 * 4),
            (&out.entropy, rows as u64 * 4),
        ];
        list.extend_from_slice(grads);
        let got = self.read_back_async(encoder, &list).await?;
        let metrics = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]));
        metrics.check(vocab)?;
        let grad = |i: usize| {
            grad_dtype.map(|dtype| HostGrad {
                dtype,
                bytes: got[i].clone(),
            })
        };
        Ok(HostHeadLoss {
            loss: HostLoss {
                metrics,
                logprobs: bytemuck::pod_collect_to_vec(&got[1]),
                entropy: bytemuck::pod_collect_to_vec(&got[2]),
                grad: None,
            },
            grad_hidden: grad(3),
            grad_lm_head: grad(4),
        })
    }

    /// The policy loss of a host batch of hidden states and an lm-head weight: uploads
    /// it, runs [`PolicyLoss::record_head`] (with `grad_dtype`, both gradients in that
    /// dtype) and reads everything back.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn policy_loss_head(
        &self,
        config: &LossConfig,
        batch: &HostHead<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostHeadLoss> {
        pollster::block_on(self.policy_loss_head_async(config, batch, grad_dtype))
    }

    /// [`Context::policy_loss_head`] without blocking (the browser's form).
    pub async fn policy_loss_head_async(
        &self,
        config: &LossConfig,
        b: &HostHead<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostHeadLoss> {
        let loss = PolicyLoss::new(self, *config)?;
        let (rows, rps, vocab, per_token) = b.check(config)?;
        let h = b.hidden_dim;
        let f32s = |label, v: &[f32]| self.upload(label, bytemuck::cast_slice(v));
        let dtype = b.hidden.dtype();
        let hidden = self.upload("hidden", b.hidden.bytes());
        let lm_head = self.upload("lm_head", b.lm_head.bytes());
        let targets = self.upload("targets", bytemuck::cast_slice(b.targets));
        let (mask, adv) = (f32s("mask", b.mask), f32s("advantages", b.advantages));
        let old = b.old_logprobs.map(|v| f32s("old_logprobs", v));
        let refp = b.ref_logprobs.map(|v| f32s("ref_logprobs", v));
        let rollout = b.rollout_logprobs.map(|v| f32s("rollout_logprobs", v));
        let grad_buf = |label, n: u64| {
            grad_dtype.map(|d| {
                let bytes = n * d.size();
                let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
                (
                    self.buffer(label, bytes.div_ceil(4).max(1) * 4, usage),
                    bytes,
                    d,
                )
            })
        };
        let gh = grad_buf("grad_hidden", rows as u64 * h as u64);
        let gw = grad_buf("grad_lm_head", vocab as u64 * h as u64);
        let hv =
            MatrixView::new(&hidden, dtype, rows, h).with_sequences(rps, rps as u64 * h as u64);
        let mut inputs = HeadInputs::new(
            hv,
            MatrixView::new(&lm_head, dtype, vocab, h),
            TargetsView::new(&targets),
            F32View::new(&mask),
            match per_token {
                true => Advantages::PerToken(F32View::new(&adv)),
                false => Advantages::PerSequence(F32View::new(&adv)),
            },
        );
        inputs.old_logprobs = old.as_ref().map(F32View::new);
        inputs.ref_logprobs = refp.as_ref().map(F32View::new);
        inputs.rollout_logprobs = rollout.as_ref().map(F32View::new);
        inputs.chunk_rows = b.chunk_rows;
        let grads = HeadGradients {
            hidden: gh.as_ref().map(|(g, _, d)| MatrixView::new(g, *d, rows, h)),
            lm_head: gw
                .as_ref()
                .map(|(g, _, d)| MatrixView::new(g, *d, vocab, h)),
        };
        let out = LossBuffers::new(self, rows);
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        loss.record_head(&mut encoder, &inputs, &grads, &out.outputs())?;
        let grads: Vec<_> = gh.iter().chain(&gw).map(|(g, n, _)| (g, *n)).collect();
        self.read_head(encoder, &out, (rows, vocab), &grads, grad_dtype)
            .await
    }
}
