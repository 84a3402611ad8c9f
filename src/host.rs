//! Convenience layer over host slices: upload, run, read back. Every call validates
//! its input on the host first (token ids included), so a bad id is an `Err` naming
//! its row rather than a NaN.

use half::{bf16, f16};
use wgpu::util::DeviceExt;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::row_stats::RowStatsBuffers;
use crate::view::{DType, LogitsView, TargetsView};

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
        let mut padded;
        let contents = if bytes.len().is_multiple_of(4) && !bytes.is_empty() {
            bytes
        } else {
            padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
            &padded
        };
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// Copies `len` f32 values from each buffer into one staging buffer, submits
    /// `encoder` with the copies, waits, and reads the values back.
    pub fn read_f32s(
        &self,
        mut encoder: wgpu::CommandEncoder,
        buffers: &[&wgpu::Buffer],
        len: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let bytes = (len * 4) as u64;
        let total = (bytes * buffers.len() as u64).max(4);
        let staging = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.scoped(|| {
            for (i, b) in buffers.iter().enumerate() {
                if bytes > 0 {
                    encoder.copy_buffer_to_buffer(b, 0, &staging, i as u64 * bytes, bytes);
                }
            }
        })?;
        self.submit_and_wait(encoder)?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Wgpu(e.to_string()))?;
        rx.recv()
            .map_err(|e| Error::Wgpu(e.to_string()))?
            .map_err(|e| Error::Wgpu(e.to_string()))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Wgpu(e.to_string()))?;
        let all: &[f32] = bytemuck::cast_slice(&view);
        let out = (0..buffers.len())
            .map(|i| all[i * len..(i + 1) * len].to_vec())
            .collect();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Per-row log-sum-exp, target log-prob and entropy of host logits `[rows, vocab]`.
    pub fn row_stats(
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
        let mut got = self.read_f32s(encoder, &[&out.lse, &out.logp, &out.entropy], rows)?;
        let entropy = got.pop().unwrap_or_default();
        let logp = got.pop().unwrap_or_default();
        let lse = got.pop().unwrap_or_default();
        Ok(RowStatsHost { lse, logp, entropy })
    }
}
