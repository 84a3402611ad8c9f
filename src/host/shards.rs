//! A vocabulary split over shards, from host slices: each shard's partials, then its
//! loss and gradient from every shard's gathered partials.

use super::{HostLogits, HostLoss, HostPart};
use crate::config::LossConfig;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::loss::{LossBuffers, PolicyLoss};
use crate::reference::sampler::KeptSets;
use crate::shards::VocabShards;
use crate::view::{DType, F32View, LogitsView, TargetsView};

impl Context {
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
        let x = (logits, targets);
        pollster::block_on(self.shard_partials_with_async(config, shards, rank, x, None))
    }

    /// [`Context::shard_partials`] over the rows' given kept sets (the whole rows'
    /// CSR, ids of the whole vocabulary; [`PolicyLoss::record_shard_partials_with`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn shard_partials_with(
        &self,
        config: &LossConfig,
        shards: &VocabShards,
        rank: usize,
        (logits, targets): (HostLogits<'_>, &[u32]),
        kept: Option<KeptSets<'_>>,
    ) -> Result<Vec<f32>> {
        let x = (logits, targets);
        pollster::block_on(self.shard_partials_with_async(config, shards, rank, x, kept))
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
        let x = (logits, targets);
        self.shard_partials_with_async(config, shards, rank, x, None)
            .await
    }

    /// [`Context::shard_partials_with`] without blocking (the browser's form).
    pub async fn shard_partials_with_async(
        &self,
        config: &LossConfig,
        shards: &VocabShards,
        rank: usize,
        (logits, targets): (HostLogits<'_>, &[u32]),
        kept: Option<KeptSets<'_>>,
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
        let padded = |n: u64| n.div_ceil(4).max(1) * 4;
        let what = format!("shard {rank}'s logits [{rows}, {width}]");
        self.fits_buffer("logits", &what, padded(logits.bytes().len() as u64))?;
        self.fits_buffer(
            "logits",
            "the shard's partial statistics",
            shards.partial_bytes(rows).max(16),
        )?;
        super::check_rows(self, rows)?;
        if let Some(k) = &kept {
            crate::loss::check_kept(config)?;
            k.validate(rows as usize, shards.vocab() as usize)?;
        }
        let x = self.upload("logits", logits.bytes());
        let y = self.upload("targets", bytemuck::cast_slice(targets));
        let csr = kept.map(|k| super::UploadedKept::new(self, &k));
        let view = csr.as_ref().map(super::UploadedKept::view);
        let bytes = shards.partial_bytes(rows);
        let out = self.buffer(
            "partials",
            bytes.max(16),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        loss.record_shard_partials_with(
            &mut encoder,
            shards,
            rank,
            (
                &LogitsView::new(&x, logits.dtype(), rows, width),
                &TargetsView::new(&y),
            ),
            view.as_ref(),
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
        // a shard's kept ids are of the whole vocabulary, not of its columns
        let mut columns = part;
        columns.batch.kept = None;
        let shape = columns.check_at(config, 0)?;
        if let Some(k) = &part.batch.kept {
            crate::loss::check_kept(config)?;
            k.validate(shape.rows as usize, shards.vocab() as usize)?;
            let rows = (part.batch.targets, part.batch.mask);
            let all = 0..shape.rows as usize;
            super::check::check_kept_targets(k, rows, shards.vocab(), all, 0)?;
        }
        self.fits_batch(&part, &shape, grad_dtype)?;
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
        let what = "every shard's partials";
        self.fits_buffer("gathered", what, (gathered.len() as u64 * 4).max(4))?;
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
}
