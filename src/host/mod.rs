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
mod loss;
mod row_stats;
mod shards;

pub use head::{HostHead, HostHeadLoss};
pub use loss::{HostBatch, HostGrad, HostLoss, HostPart};
pub use row_stats::RowStatsHost;

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
}
