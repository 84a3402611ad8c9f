//! Convenience layer over host slices: upload, run, read back. Every call validates
//! its input (shapes and per-row values on the host before anything is uploaded,
//! `check.rs`; token ids on the device, read back with the metrics), so bad input is an
//! `Err` naming its row rather than a NaN.

use half::{bf16, f16};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::view::DType;

mod advantages;
mod check;
mod head;
mod logprobs;
mod loss;
mod row_stats;
mod shards;

pub use head::{HostHead, HostHeadLoss};
pub use logprobs::{HostLogProbs, HostLogProbsHead};
pub use loss::{HostBatch, HostGrad, HostLoss, HostPart};
pub use row_stats::RowStatsHost;

/// Logits `[rows, vocab]` in host memory, row-major; uploaded as they are, in their own
/// dtype (the kernels widen each element to f32).
#[derive(Clone, Copy, Debug)]
pub enum HostLogits<'a> {
    /// f32 logits.
    F32(&'a [f32]),
    /// IEEE half-precision logits (needs no `SHADER_F16`: the portable path unpacks
    /// them).
    F16(&'a [f16]),
    /// bfloat16 logits.
    Bf16(&'a [bf16]),
}

impl HostLogits<'_> {
    /// The elements' dtype.
    pub fn dtype(&self) -> DType {
        match self {
            HostLogits::F32(_) => DType::F32,
            HostLogits::F16(_) => DType::F16,
            HostLogits::Bf16(_) => DType::Bf16,
        }
    }

    /// The number of elements (`rows·vocab`), not bytes.
    pub fn len(&self) -> usize {
        match self {
            HostLogits::F32(x) => x.len(),
            HostLogits::F16(x) => x.len(),
            HostLogits::Bf16(x) => x.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' bytes, little-endian as the device reads them (no copy).
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

/// `Err` where `rows` per-row values (f32 or u32: targets, mask, log-probs, the
/// per-row outputs) need a buffer larger than the device's largest.
/// A host batch's given kept sets on the device: the offsets, the ids and how many.
pub(crate) struct UploadedKept {
    offsets: wgpu::Buffer,
    ids: wgpu::Buffer,
    len: u32,
}

impl UploadedKept {
    pub(crate) fn new(ctx: &Context, k: &crate::reference::sampler::KeptSets<'_>) -> Self {
        let u32s = |label, v: &[u32]| ctx.upload(label, bytemuck::cast_slice(v));
        UploadedKept {
            offsets: u32s("keep_offsets", k.offsets),
            ids: u32s("keep_ids", k.ids),
            len: k.ids.len() as u32,
        }
    }

    pub(crate) fn view(&self) -> crate::KeptView<'_> {
        crate::KeptView::new(&self.offsets, &self.ids, self.len)
    }
}

pub(crate) fn check_rows(ctx: &Context, rows: u32) -> Result<()> {
    ctx.fits_buffer(
        "targets",
        &format!("one value for each of {rows} rows"),
        rows as u64 * 4,
    )
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

/// Bytes of one staging buffer of a read-back at most (the device's largest buffer,
/// where that is smaller).
pub(crate) const STAGING_BYTES: u64 = 256 << 20;

/// A piece of a read-back: bytes `offset .. offset + len` (4-byte multiples) of
/// `buffer`, of which the first `keep` are `group`'s.
struct Piece<'b> {
    group: usize,
    buffer: &'b wgpu::Buffer,
    offset: u64,
    len: u64,
    keep: u64,
}

/// The pieces of every group's buffers, in order, in batches of at most `cap` bytes
/// (one batch at least, if empty: the encoder is still submitted).
fn staging_batches<'b>(groups: &[&[(&'b wgpu::Buffer, u64)]], cap: u64) -> Vec<Vec<Piece<'b>>> {
    let (mut batches, mut batch, mut room) = (Vec::new(), Vec::new(), cap);
    for (group, list) in groups.iter().enumerate() {
        for &(buffer, n) in list.iter() {
            let padded = n.div_ceil(4) * 4;
            let mut offset = 0;
            while offset < padded {
                if room == 0 {
                    batches.push(std::mem::take(&mut batch));
                    room = cap;
                }
                let len = room.min(padded - offset);
                batch.push(Piece {
                    group,
                    buffer,
                    offset,
                    len,
                    keep: len.min(n.saturating_sub(offset)),
                });
                offset += len;
                room -= len;
            }
        }
    }
    if !batch.is_empty() || batches.is_empty() {
        batches.push(batch);
    }
    batches
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
        encoder: wgpu::CommandEncoder,
        buffers: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        let groups: Vec<&[(&wgpu::Buffer, u64)]> =
            buffers.iter().map(std::slice::from_ref).collect();
        self.read_back_groups(encoder, &groups).await
    }

    /// [`Context::read_back_async`] of groups of buffers, each group's bytes joined in
    /// one vector (a matrix held in blocks comes back whole). What is read passes
    /// through staging buffers of at most [`STAGING_BYTES`], one at a time: reading
    /// back more than the device's largest buffer holds is no error, and the host holds
    /// one copy of it.
    pub(crate) async fn read_back_groups(
        &self,
        encoder: wgpu::CommandEncoder,
        groups: &[&[(&wgpu::Buffer, u64)]],
    ) -> Result<Vec<Vec<u8>>> {
        let cap = STAGING_BYTES.min(self.device().limits().max_buffer_size) / 4 * 4;
        let batches = staging_batches(groups, cap.max(4));
        let mut out: Vec<Vec<u8>> = groups
            .iter()
            .map(|g| Vec::with_capacity(g.iter().map(|&(_, n)| n as usize).sum()))
            .collect();
        let mut encoder = Some(encoder);
        for batch in &batches {
            let mut enc = encoder.take().unwrap_or_else(|| {
                self.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            let total: u64 = batch.iter().map(|p| p.len).sum();
            let staging = self.buffer(
                "readback",
                total.max(4),
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            );
            self.scoped(|| {
                let mut at = 0;
                for p in batch {
                    enc.copy_buffer_to_buffer(p.buffer, p.offset, &staging, at, p.len);
                    at += p.len;
                }
            })?;
            self.map_staging(enc, &staging).await?;
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Wgpu(e.to_string()))?;
            let mut at = 0usize;
            for p in batch {
                out[p.group].extend_from_slice(&view[at..at + p.keep as usize]);
                at += p.len as usize;
            }
            drop(view);
            staging.unmap();
        }
        Ok(out)
    }

    /// Submits `encoder` and maps `staging` for reading; errors (validation, a lost
    /// device, a failed map) come back as `Err`.
    async fn map_staging(
        &self,
        encoder: wgpu::CommandEncoder,
        staging: &wgpu::Buffer,
    ) -> Result<()> {
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
        mapped.map_err(|e| Error::Wgpu(e.to_string()))
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
}
