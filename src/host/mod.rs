//! Convenience layer over host slices: upload, run, read back. Every call validates
//! its input (shapes and per-row values on the host before anything is uploaded,
//! `check.rs`; token ids on the device, read back with the metrics), so bad input is an
//! `Err` naming its row rather than a NaN.

use half::{bf16, f16};

use crate::config::LossConfig;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::row_stats::RowStatsBuffers;
use crate::loss::{
    Advantages, GradView, Gradient, LossBuffers, LossInputs, LossPart, Metrics, PolicyLoss,
};
use crate::shards::VocabShards;
use crate::view::{DType, F32View, LogitsView, TargetsView};

mod check;
use check::Shape;

/// Logits `[rows, vocab]` in host memory, row-major.
#[derive(Clone, Copy, Debug)]
pub enum HostLogits<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl HostLogits<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            HostLogits::F32(_) => DType::F32,
            HostLogits::F16(_) => DType::F16,
            HostLogits::Bf16(_) => DType::Bf16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostLogits::F32(x) => x.len(),
            HostLogits::F16(x) => x.len(),
            HostLogits::Bf16(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            HostLogits::F32(x) => bytemuck::cast_slice(x),
            HostLogits::F16(x) => bytemuck::cast_slice(x),
            HostLogits::Bf16(x) => bytemuck::cast_slice(x),
        }
    }

    /// Element `i` widened to f64 (exact for every dtype).
    pub fn get(&self, i: usize) -> f64 {
        match self {
            HostLogits::F32(x) => x[i] as f64,
            HostLogits::F16(x) => x[i].to_f64(),
            HostLogits::Bf16(x) => x[i].to_f64(),
        }
    }
}

/// Per-row results read back to the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowStatsHost {
    pub lse: Vec<f32>,
    pub logp: Vec<f32>,
    pub entropy: Vec<f32>,
}

/// Checks `targets` against `rows` and `vocab`; the first bad row is named.
pub fn check_targets(targets: &[u32], rows: usize, vocab: u32) -> Result<()> {
    if targets.len() != rows {
        return Err(Error::arg(
            "targets",
            format!("has {} ids for {rows} logits rows", targets.len()),
        ));
    }
    match targets.iter().position(|&y| y >= vocab) {
        Some(row) => Err(Error::TargetOutOfRange {
            row,
            id: targets[row] as i64,
            vocab,
        }),
        None => Ok(()),
    }
}

impl Context {
    /// Uploads a host slice into a new storage buffer (padded to 4 bytes).
    pub fn upload(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.buffer_init(
            label,
            bytes,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        )
    }

    /// Copies the first `bytes` of each buffer into one staging buffer, submits
    /// `encoder` with the copies, waits, and reads the bytes back.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_back(
        &self,
        encoder: wgpu::CommandEncoder,
        buffers: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        pollster::block_on(self.read_back_async(encoder, buffers))
    }

    /// [`Context::read_back`] without blocking: the browser's form, where the page's
    /// event loop maps the buffer (natively the device is polled until it has).
    pub async fn read_back_async(
        &self,
        mut encoder: wgpu::CommandEncoder,
        buffers: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        // copies need 4-byte sizes and offsets
        let padded: Vec<u64> = buffers.iter().map(|&(_, n)| n.div_ceil(4) * 4).collect();
        let total: u64 = padded.iter().sum::<u64>().max(4);
        let staging = self.buffer(
            "readback",
            total,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        self.scoped(|| {
            let mut at = 0;
            for (&(b, _), &n) in buffers.iter().zip(&padded) {
                if n > 0 {
                    encoder.copy_buffer_to_buffer(b, 0, &staging, at, n);
                }
                at += n;
            }
        })?;
        let (tx, rx) = futures_channel::oneshot::channel();
        #[cfg(not(target_arch = "wasm32"))]
        self.submit_and_wait(encoder)?;
        #[cfg(target_arch = "wasm32")]
        self.queue().submit([encoder.finish()]);
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Wgpu(e.to_string()))?;
        let mapped = rx.await.map_err(|e| Error::Wgpu(e.to_string()))?;
        self.take_uncaptured()?;
        self.check_alive()?;
        mapped.map_err(|e| Error::Wgpu(e.to_string()))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Wgpu(e.to_string()))?;
        let mut out = Vec::with_capacity(buffers.len());
        let mut at = 0usize;
        for (&(_, n), &p) in buffers.iter().zip(&padded) {
            out.push(view[at..at + n as usize].to_vec());
            at += p as usize;
        }
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// [`Context::read_back`] of `len` f32 values from each buffer.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32s(
        &self,
        encoder: wgpu::CommandEncoder,
        buffers: &[&wgpu::Buffer],
        len: usize,
    ) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.read_f32s_async(encoder, buffers, len))
    }

    /// [`Context::read_f32s`] without blocking (the browser's form).
    pub async fn read_f32s_async(
        &self,
        encoder: wgpu::CommandEncoder,
        buffers: &[&wgpu::Buffer],
        len: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let list: Vec<(&wgpu::Buffer, u64)> =
            buffers.iter().map(|&b| (b, len as u64 * 4)).collect();
        Ok(self
            .read_back_async(encoder, &list)
            .await?
            .iter()
            .map(|bytes| bytemuck::pod_collect_to_vec(bytes))
            .collect())
    }

    /// Per-row log-sum-exp, target log-prob and entropy of host logits `[rows, vocab]`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn row_stats(
        &self,
        logits: HostLogits<'_>,
        vocab: u32,
        targets: &[u32],
        temperature: f32,
    ) -> Result<RowStatsHost> {
        pollster::block_on(self.row_stats_async(logits, vocab, targets, temperature))
    }

    /// [`Context::row_stats`] without blocking (the browser's form).
    pub async fn row_stats_async(
        &self,
        logits: HostLogits<'_>,
        vocab: u32,
        targets: &[u32],
        temperature: f32,
    ) -> Result<RowStatsHost> {
        if vocab == 0 {
            return Err(Error::arg("vocab", "must be at least 1"));
        }
        if !logits.len().is_multiple_of(vocab as usize) {
            return Err(Error::arg(
                "logits",
                format!("length {} is not a multiple of vocab {vocab}", logits.len()),
            ));
        }
        let rows = logits.len() / vocab as usize;
        let rows_u32 = u32::try_from(rows).map_err(|_| Error::arg("logits", "too many rows"))?;
        check_targets(targets, rows, vocab)?;
        crate::kernels::row_stats::check_temperature(temperature)?;
        if rows == 0 {
            return Ok(RowStatsHost::default());
        }
        let x = self.upload("logits", logits.bytes());
        let y = self.upload("targets", bytemuck::cast_slice(targets));
        let out = RowStatsBuffers::new(self, rows_u32);
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        self.record_row_stats(
            &mut encoder,
            &LogitsView::new(&x, logits.dtype(), rows_u32, vocab),
            &TargetsView::new(&y),
            temperature,
            &out.outputs(),
        )?;
        let mut got = self
            .read_f32s_async(encoder, &[&out.lse, &out.logp, &out.entropy], rows)
            .await?;
        let entropy = got.pop().unwrap_or_default();
        let logp = got.pop().unwrap_or_default();
        let lse = got.pop().unwrap_or_default();
        Ok(RowStatsHost { lse, logp, entropy })
    }
}

/// One batch on the host for [`Context::policy_loss`].
#[derive(Clone, Copy, Debug)]
pub struct HostBatch<'a> {
    /// `rows × vocab`, row-major.
    pub logits: HostLogits<'a>,
    pub vocab: u32,
    /// Rows per sequence (S); `None` for one sequence of all rows.
    pub rows_per_seq: Option<u32>,
    pub targets: &'a [u32],
    pub mask: &'a [f32],
    /// One per sequence, or one per row.
    pub advantages: &'a [f32],
    pub old_logprobs: Option<&'a [f32]>,
    pub ref_logprobs: Option<&'a [f32]>,
}

/// One part of a host batch for [`Context::policy_loss_parts`]: the batch, and the
/// sampler's log-probs (one per row) where the loss corrects for the rollout
/// ([`LossConfig::rollout_correction`]). A [`HostBatch`] is a part without them.
#[derive(Clone, Copy, Debug)]
pub struct HostPart<'a> {
    pub batch: HostBatch<'a>,
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
    pub dtype: DType,
    /// Little-endian elements, `rows × vocab`.
    pub bytes: Vec<u8>,
}

impl HostGrad {
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
    pub metrics: Metrics,
    pub logprobs: Vec<f32>,
    pub entropy: Vec<f32>,
    pub grad: Option<HostGrad>,
}

/// One host batch uploaded: its buffers and shape.
struct Uploaded {
    rows: u32,
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
    grad: Option<(wgpu::Buffer, u64)>,
}

impl Uploaded {
    /// The device inputs of this part (logits of `vocab` columns), with a gradient into
    /// its buffer where `grad_dtype` asks for one.
    fn loss_part(&self, vocab: u32, grad_dtype: Option<DType>) -> LossPart<'_> {
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

    /// Shard `rank`'s partial statistics ([`PolicyLoss::record_shard_partials`]) of host
    /// logits holding its columns, `rows × shards.width(rank)` row-major, and the rows'
    /// token ids (of the whole vocabulary): `rows × 4` f32 to gather with the other
    /// shards' in rank order. Only the config's temperature is used.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn shard_partials(
        &self,
        config: &LossConfig,
        shards: &VocabShards,
        rank: usize,
        logits: HostLogits<'_>,
        targets: &[u32],
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.shard_partials_async(config, shards, rank, logits, targets))
    }

    /// [`Context::shard_partials`] without blocking (the browser's form).
    pub async fn shard_partials_async(
        &self,
        config: &LossConfig,
        shards: &VocabShards,
        rank: usize,
        logits: HostLogits<'_>,
        targets: &[u32],
    ) -> Result<Vec<f32>> {
        config.validate()?;
        shards.check_rank(rank)?;
        let width = shards.width(rank);
        if !logits.len().is_multiple_of(width as usize) {
            return Err(Error::arg(
                "logits",
                format!(
                    "length {} is not a multiple of shard {rank}'s width {width}",
                    logits.len()
                ),
            ));
        }
        let rows = u32::try_from(logits.len() / width as usize)
            .map_err(|_| Error::arg("logits", "too many rows"))?;
        if targets.len() != rows as usize {
            return Err(Error::arg(
                "targets",
                format!("has {} ids for {rows} logits rows", targets.len()),
            ));
        }
        let loss = PolicyLoss::new(self, *config)?;
        let x = self.upload("logits", logits.bytes());
        let y = self.upload("targets", bytemuck::cast_slice(targets));
        let bytes = shards.partial_bytes(rows);
        let out = self.buffer(
            "partials",
            bytes.max(16),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        loss.record_shard_partials(
            &mut encoder,
            shards,
            rank,
            &LogitsView::new(&x, logits.dtype(), rows, width),
            &TargetsView::new(&y),
            F32View::new(&out),
        )?;
        Ok(self
            .read_f32s_async(encoder, &[&out], (rows * crate::PARTIAL_FLOATS) as usize)
            .await?
            .remove(0))
    }

    /// [`PolicyLoss::record_shard_loss`] of a host batch holding shard `rank`'s columns
    /// (`vocab` = `shards.width(rank)`), with `gathered` every shard's partials in rank
    /// order (`shards.len() × rows × 4` f32): the loss, metrics and per-row outputs of
    /// the whole vocabulary, and the gradient of this shard's columns (`rows × width`).
    /// A token id outside the whole vocabulary is an error naming the first such row.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn policy_loss_shard<'a, P: Into<HostPart<'a>>>(
        &self,
        config: &LossConfig,
        shards: &VocabShards,
        rank: usize,
        part: P,
        gathered: &[f32],
        grad_dtype: Option<DType>,
    ) -> Result<HostLoss> {
        pollster::block_on(
            self.policy_loss_shard_async(config, shards, rank, part, gathered, grad_dtype),
        )
    }

    /// [`Context::policy_loss_shard`] without blocking (the browser's form).
    pub async fn policy_loss_shard_async<'a, P: Into<HostPart<'a>>>(
        &self,
        config: &LossConfig,
        shards: &VocabShards,
        rank: usize,
        part: P,
        gathered: &[f32],
        grad_dtype: Option<DType>,
    ) -> Result<HostLoss> {
        config.validate()?;
        shards.check_rank(rank)?;
        let part: HostPart<'a> = part.into();
        if part.batch.vocab != shards.width(rank) {
            return Err(Error::arg(
                "vocab",
                format!(
                    "is {}, but shard {rank} holds {} columns",
                    part.batch.vocab,
                    shards.width(rank)
                ),
            ));
        }
        let loss = PolicyLoss::new(self, *config)?;
        let shape = part.check_at(config, 0)?;
        let up = self.upload_batch(&part, &shape, grad_dtype)?;
        let expect = shards.len() * up.rows as usize * crate::PARTIAL_FLOATS as usize;
        if gathered.len() != expect {
            return Err(Error::arg(
                "gathered",
                format!(
                    "has {} values; {} shards × {} rows × {} are {expect}",
                    gathered.len(),
                    shards.len(),
                    up.rows,
                    crate::PARTIAL_FLOATS
                ),
            ));
        }
        let g = self.upload("gathered", bytemuck::cast_slice(gathered));
        let out = LossBuffers::new(self, up.rows);
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        loss.record_shard_loss(
            &mut encoder,
            shards,
            rank,
            up.loss_part(part.batch.vocab, grad_dtype),
            F32View::new(&g),
            &out.outputs(),
        )?;
        let rows = up.rows;
        self.read_loss_async(encoder, &out, &[up], rows, grad_dtype, shards.vocab())
            .await
    }

    /// Submits `encoder` and reads back a loss call's outputs and the parts' gradients;
    /// an invalid id (of a vocabulary of `vocab`) is the error naming its row.
    async fn read_loss_async(
        &self,
        encoder: wgpu::CommandEncoder,
        out: &LossBuffers,
        parts: &[Uploaded],
        rows: u32,
        grad_dtype: Option<DType>,
        vocab: u32,
    ) -> Result<HostLoss> {
        let mut list = vec![
            (&out.metrics, Metrics::LEN as u64 * 4),
            (&out.logprobs, rows as u64 * 4),
            (&out.entropy, rows as u64 * 4),
        ];
        list.extend(
            parts
                .iter()
                .filter_map(|p| p.grad.as_ref().map(|(b, n)| (b, *n))),
        );
        let got = self.read_back_async(encoder, &list).await?;
        let grad = grad_dtype.map(|dtype| HostGrad {
            dtype,
            bytes: got[3..].concat(),
        });
        let entropy = bytemuck::pod_collect_to_vec(&got[2]);
        let logprobs = bytemuck::pod_collect_to_vec(&got[1]);
        let metrics = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]));
        // the ids were checked on the device: the first bad masked-in row is an error
        metrics.check(vocab)?;
        Ok(HostLoss {
            metrics,
            logprobs,
            entropy,
            grad,
        })
    }

    /// Uploads a host batch of `shape` (checked by [`HostPart::check_at`]), with a
    /// gradient buffer of `grad_dtype`.
    fn upload_batch(
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
