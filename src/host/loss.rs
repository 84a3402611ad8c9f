//! The policy loss of host batches: upload, record, read back.

use crate::reference::sampler::KeptSets;
use half::{bf16, f16};

use super::check::Shape;
use super::HostLogits;
use crate::config::LossConfig;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::loss::{
    Advantages, GradView, Gradient, LossBuffers, LossInputs, LossPart, Metrics, PolicyLoss,
};
use crate::view::{DType, F32View, LogitsView, TargetsView};

/// One batch on the host for [`Context::policy_loss`].
#[derive(Clone, Copy, Debug)]
pub struct HostBatch<'a> {
    /// `rows × vocab`, row-major: row `r` scores the choice of `targets[r]`
    /// (docs/MATH.md#inputs-and-layout). Its length must be a multiple of `vocab`.
    pub logits: HostLogits<'a>,
    /// The vocabulary size `V`, the logits' row length; at least 1.
    pub vocab: u32,
    /// Rows per sequence (S); `None` for one sequence of all rows. The last sequence
    /// may be shorter.
    pub rows_per_seq: Option<u32>,
    /// The sampled token id `y_r` of each row, in `[0, vocab)` on masked-in rows
    /// (checked on the device: [`Error::TargetOutOfRange`]); anything (padding's
    /// `-100 as u32` included) on rows whose mask is 0.
    pub targets: &'a [u32],
    /// The response mask `m_r` of each row: 0 leaves a row out, other finite values ≥ 0
    /// weigh it linearly; negative, NaN or ±inf is [`Error::InvalidInput`].
    pub mask: &'a [f32],
    /// The advantages `A`: one per sequence (broadcast over its rows), or one per row.
    pub advantages: &'a [f32],
    /// The behaviour policy's log-prob of each row (`old_logp`, the PPO ratio's
    /// denominator); `None` for an on-policy call (`r ≡ 1`).
    pub old_logprobs: Option<&'a [f32]>,
    /// The reference policy's log-prob of each row (`ref_logp`), for the KL term
    /// (docs/MATH.md#the-kl-term); required when `kl_coef ≠ 0`.
    pub ref_logprobs: Option<&'a [f32]>,
    /// The sampler's temperature of each row, in place of the configuration's one
    /// (which must then be 1); checked on masked-in rows (docs/MATH.md#bad-input).
    pub temperatures: Option<&'a [f32]>,
    /// The sampler's given kept set of each row (CSR: `offsets` of rows + 1, `ids`);
    /// every row's ids are checked, and a masked-in row's target must be among them
    /// (docs/MATH.md#given-kept-sets, docs/MATH.md#bad-input).
    pub kept: Option<KeptSets<'a>>,
}

/// One part of a host batch for [`Context::policy_loss_parts`]: the batch, and the
/// sampler's log-probs (one per row) where the loss corrects for the rollout
/// ([`LossConfig::rollout_correction`]). A [`HostBatch`] is a part without them.
#[derive(Clone, Copy, Debug)]
pub struct HostPart<'a> {
    /// The part's rows: whole sequences, numbered after the previous parts' rows.
    pub batch: HostBatch<'a>,
    /// The sampler's log-prob of each row (`rollout_logp`), read by the rollout
    /// correction and the off-policy mask (docs/MATH.md#rollout-correction); ignored
    /// when neither is on.
    pub rollout_logprobs: Option<&'a [f32]>,
}

impl<'a> From<HostBatch<'a>> for HostPart<'a> {
    fn from(batch: HostBatch<'a>) -> Self {
        HostPart {
            batch,
            rollout_logprobs: None,
        }
    }
}

impl<'a> From<&HostBatch<'a>> for HostPart<'a> {
    fn from(batch: &HostBatch<'a>) -> Self {
        (*batch).into()
    }
}

impl<'a> HostBatch<'a> {
    /// This batch with the sampler's log-probs, for the rollout correction.
    pub fn with_rollout_logprobs(self, v: &'a [f32]) -> HostPart<'a> {
        HostPart {
            batch: self,
            rollout_logprobs: Some(v),
        }
    }
}

/// A gradient read back in its dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct HostGrad {
    /// The elements' dtype, the one the call asked for.
    pub dtype: DType,
    /// Little-endian elements, `rows × vocab`.
    pub bytes: Vec<u8>,
}

impl From<DType> for crate::reference::compare::Format {
    fn from(dtype: DType) -> Self {
        use crate::reference::compare::Format;
        match dtype {
            DType::F32 => Format::F32,
            DType::F16 => Format::F16,
            DType::Bf16 => Format::BF16,
        }
    }
}

impl HostGrad {
    /// This gradient against the reference's ∂L/∂logits `want`, by
    /// [`compare::logits_grad`](crate::reference::compare::logits_grad)'s rule.
    pub fn compare_logits_grad(
        &self,
        want: &[f64],
    ) -> std::result::Result<
        crate::reference::compare::Comparison,
        crate::reference::compare::Mismatch,
    > {
        crate::reference::compare::logits_grad(&self.to_f32(), want, self.dtype.into())
    }

    /// The gradient widened to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec(&self.bytes),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(&self.bytes)
                .iter()
                .map(|h| h.to_f32())
                .collect(),
            DType::Bf16 => bytemuck::pod_collect_to_vec::<u8, bf16>(&self.bytes)
                .iter()
                .map(|h| h.to_f32())
                .collect(),
        }
    }
}

/// Everything [`Context::policy_loss`] computes, read back.
#[derive(Clone, Debug, PartialEq)]
pub struct HostLoss {
    /// The loss and the metrics (docs/MATH.md#metrics), already checked: a bad token
    /// id or per-row input came back as the call's `Err`.
    pub metrics: Metrics,
    /// `logp_r` of each row's target, every part's rows in order (unspecified on rows
    /// outside the loss).
    pub logprobs: Vec<f32>,
    /// The entropy `H_r` of each row's (tempered, kept) distribution.
    pub entropy: Vec<f32>,
    /// log Σ_v e^{z_v} per row, `z = x/τ` under the sampler's options
    /// (docs/MATH.md#row-statistics; unspecified on rows outside the loss).
    pub lse: Vec<f32>,
    /// ∂Loss/∂logits, `rows × vocab`, when the call asked for a gradient dtype.
    pub grad: Option<HostGrad>,
}

/// One host batch uploaded: its buffers and shape.
pub(super) struct Uploaded {
    pub(super) rows: u32,
    rows_per_seq: u32,
    per_token: bool,
    dtype: DType,
    logits: wgpu::Buffer,
    targets: wgpu::Buffer,
    mask: wgpu::Buffer,
    advantages: wgpu::Buffer,
    old: Option<wgpu::Buffer>,
    refp: Option<wgpu::Buffer>,
    rollout: Option<wgpu::Buffer>,
    temps: Option<wgpu::Buffer>,
    /// The kept sets' offsets and ids, and how many ids.
    kept: Option<super::UploadedKept>,
    grad: Option<(wgpu::Buffer, u64)>,
}

impl Uploaded {
    /// The device inputs of this part (logits of `vocab` columns), with a gradient into
    /// its buffer where `grad_dtype` asks for one.
    pub(super) fn loss_part(&self, vocab: u32, grad_dtype: Option<DType>) -> LossPart<'_> {
        let logits = LogitsView::new(&self.logits, self.dtype, self.rows, vocab)
            .with_sequences(self.rows_per_seq, self.rows_per_seq as u64 * vocab as u64);
        let inputs = LossInputs {
            logits,
            targets: TargetsView::new(&self.targets),
            mask: F32View::new(&self.mask),
            advantages: if self.per_token {
                Advantages::PerToken(F32View::new(&self.advantages))
            } else {
                Advantages::PerSequence(F32View::new(&self.advantages))
            },
            old_logprobs: self.old.as_ref().map(F32View::new),
            ref_logprobs: self.refp.as_ref().map(F32View::new),
            temperatures: self.temps.as_ref().map(F32View::new),
            kept: self.kept.as_ref().map(super::UploadedKept::view),
        };
        let gradient = match (&self.grad, grad_dtype) {
            (Some((buf, _)), Some(d)) => Gradient::Into(GradView::new(buf, d, vocab)),
            _ => Gradient::None,
        };
        LossPart {
            inputs,
            gradient,
            rollout_logprobs: self.rollout.as_ref().map(F32View::new),
        }
    }
}

impl Context {
    /// The policy loss of a host batch: uploads it, runs the forward (and, with
    /// `grad_dtype`, the backward) and reads everything back. The mask, advantages and
    /// log-probs are checked on the host first ([`HostPart::check`]), token ids on
    /// masked-in rows on the device; either error names the first bad row.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn policy_loss(
        &self,
        config: &LossConfig,
        batch: &HostBatch<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostLoss> {
        self.policy_loss_parts(config, std::slice::from_ref(batch), grad_dtype)
    }

    /// [`Context::policy_loss`] without blocking (the browser's form).
    pub async fn policy_loss_async(
        &self,
        config: &LossConfig,
        batch: &HostBatch<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostLoss> {
        self.policy_loss_parts_async(config, std::slice::from_ref(batch), grad_dtype)
            .await
    }

    /// [`Context::policy_loss`] of a batch held in several parts (each of whole
    /// sequences, each uploaded to buffers of its own), computed as one batch by
    /// [`PolicyLoss::record_parts`]: per-row outputs and the gradient (`rows × vocab`)
    /// hold every part's rows in order, as for the parts joined into one batch.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn policy_loss_parts<'a, P: Copy + Into<HostPart<'a>>>(
        &self,
        config: &LossConfig,
        parts: &[P],
        grad_dtype: Option<DType>,
    ) -> Result<HostLoss> {
        pollster::block_on(self.policy_loss_parts_async(config, parts, grad_dtype))
    }

    /// [`Context::policy_loss_parts`] without blocking (the browser's form).
    pub async fn policy_loss_parts_async<'a, P: Copy + Into<HostPart<'a>>>(
        &self,
        config: &LossConfig,
        parts: &[P],
        grad_dtype: Option<DType>,
    ) -> Result<HostLoss> {
        config.validate()?;
        let loss = PolicyLoss::new(self, *config)?;
        let host: Vec<HostPart<'a>> = parts.iter().map(|&p| p.into()).collect();
        let batches: Vec<HostBatch<'a>> = host.iter().map(|p| p.batch).collect();
        let many = batches.len() > 1;
        // every part checked before any is uploaded, rows numbered over every part as
        // the device numbers them
        let mut shapes = Vec::with_capacity(host.len());
        let mut first_row = 0;
        for (i, p) in host.iter().enumerate() {
            let shape = p.check_at(config, first_row).map_err(|e| match e {
                Error::InvalidArgument { arg, reason } if many => Error::InvalidArgument {
                    arg,
                    reason: format!("(part {i}) {reason}"),
                },
                other => other,
            })?;
            first_row += shape.rows as usize;
            shapes.push(shape);
        }
        for (i, (p, shape)) in host.iter().zip(&shapes).enumerate() {
            self.fits_batch(p, shape, grad_dtype).map_err(|e| match e {
                Error::InvalidArgument { arg, reason } if many => Error::InvalidArgument {
                    arg,
                    reason: format!("(part {i}) {reason}"),
                },
                other => other,
            })?;
        }
        let parts = host
            .iter()
            .zip(&shapes)
            .map(|(p, shape)| self.upload_batch(p, shape, grad_dtype))
            .collect::<Result<Vec<_>>>()?;
        let vocab = batches.first().map_or(1, |b| b.vocab);
        let rows = parts
            .iter()
            .try_fold(0u32, |n, p| n.checked_add(p.rows))
            .ok_or_else(|| Error::arg("logits", "the parts hold more than 2^32 - 1 rows"))?;
        let out = LossBuffers::new(self, rows);
        let views: Vec<LossPart<'_>> = parts
            .iter()
            .zip(batches)
            .map(|(p, b)| p.loss_part(b.vocab, grad_dtype))
            .collect();
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        loss.record_parts(&mut encoder, &views, &out.outputs())?;
        self.read_loss_async(encoder, &out, &parts, rows, grad_dtype, vocab)
            .await
    }

    /// Submits `encoder` and reads back a loss call's outputs and the parts' gradients;
    /// an invalid id (of a vocabulary of `vocab`) is the error naming its row.
    pub(super) async fn read_loss_async(
        &self,
        encoder: wgpu::CommandEncoder,
        out: &LossBuffers,
        parts: &[Uploaded],
        rows: u32,
        grad_dtype: Option<DType>,
        vocab: u32,
    ) -> Result<HostLoss> {
        let list = [
            (&out.metrics, Metrics::LEN as u64 * 4),
            (&out.logprobs, rows as u64 * 4),
            (&out.entropy, rows as u64 * 4),
            (&out.lse, rows as u64 * 4),
        ];
        let grads: Vec<(&wgpu::Buffer, u64)> = parts
            .iter()
            .filter_map(|p| p.grad.as_ref().map(|(b, n)| (b, *n)))
            .collect();
        let mut groups: Vec<&[(&wgpu::Buffer, u64)]> =
            list.iter().map(std::slice::from_ref).collect();
        groups.push(&grads);
        let mut got = self.read_back_groups(encoder, &groups).await?;
        let grad = grad_dtype.map(|dtype| HostGrad {
            dtype,
            bytes: std::mem::take(&mut got[4]),
        });
        let lse = bytemuck::pod_collect_to_vec(&got[3]);
        let entropy = bytemuck::pod_collect_to_vec(&got[2]);
        let logprobs = bytemuck::pod_collect_to_vec(&got[1]);
        let metrics = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]));
        // the ids were checked on the device: the first bad masked-in row is an error
        metrics.check(vocab)?;
        Ok(HostLoss {
            metrics,
            logprobs,
            entropy,
            lse,
            grad,
        })
    }

    /// `Err`, naming the tensor and the sizes, where a buffer of this part (its
    /// logits, their gradient, its per-row values) would be larger than the device's
    /// largest: a batch that large goes in several parts, each in buffers of its own.
    pub(super) fn fits_batch(
        &self,
        part: &HostPart<'_>,
        shape: &Shape,
        grad_dtype: Option<DType>,
    ) -> Result<()> {
        let batch = &part.batch;
        let (rows, vocab) = (shape.rows as u64, batch.vocab as u64);
        let dims = format!("[{rows}, {vocab}]");
        let dtype = batch.logits.dtype();
        let padded = |n: u64| n.div_ceil(4).max(1) * 4;
        let what = format!("{dims} {dtype} (a batch in several parts has a buffer per part)");
        self.fits_buffer("logits", &what, padded(rows * vocab * dtype.size()))?;
        if let Some(g) = grad_dtype {
            let what =
                format!("the gradient {dims} {g} (a batch in several parts has a buffer per part)");
            self.fits_buffer("gradient", &what, padded(rows * vocab * g.size()))?;
        }
        super::check_rows(self, shape.rows)
    }

    /// Uploads a host batch of `shape` (checked by [`HostPart::check_at`] and
    /// [`Context::fits_batch`]), with a gradient buffer of `grad_dtype`.
    pub(super) fn upload_batch(
        &self,
        part: &HostPart<'_>,
        shape: &Shape,
        grad_dtype: Option<DType>,
    ) -> Result<Uploaded> {
        let batch = &part.batch;
        let (rows, vocab) = (shape.rows as usize, batch.vocab);
        let f32s = |label, v: &[f32]| self.upload(label, bytemuck::cast_slice(v));
        let grad_bytes = rows as u64 * vocab as u64 * grad_dtype.map_or(0, DType::size);
        Ok(Uploaded {
            rows: shape.rows,
            rows_per_seq: shape.rows_per_seq,
            per_token: shape.per_token,
            dtype: batch.logits.dtype(),
            logits: self.upload("logits", batch.logits.bytes()),
            targets: self.upload("targets", bytemuck::cast_slice(batch.targets)),
            mask: f32s("mask", batch.mask),
            advantages: f32s("advantages", batch.advantages),
            old: batch.old_logprobs.map(|v| f32s("old_logprobs", v)),
            refp: batch.ref_logprobs.map(|v| f32s("ref_logprobs", v)),
            rollout: part.rollout_logprobs.map(|v| f32s("rollout_logprobs", v)),
            temps: batch.temperatures.map(|v| f32s("temperatures", v)),
            kept: batch.kept.map(|k| super::UploadedKept::new(self, &k)),
            grad: grad_dtype.map(|_| {
                let buffer = self.buffer(
                    "gradient",
                    grad_bytes.div_ceil(4).max(1) * 4,
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                );
                (buffer, grad_bytes)
            }),
        })
    }
}
