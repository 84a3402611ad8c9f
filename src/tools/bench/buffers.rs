//! The buffers of a benchmark shape: the logits in parts of whole rows that fit one
//! buffer, filled on the device from a pattern (no T×V host buffer), the loss inputs
//! beside them, and the unfused baseline's `[T, V]` intermediates.

use super::BenchShape;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::view::DType;

/// One buffer's worth of a shape's rows, and the loss inputs beside them.
pub(super) struct Part {
    pub(super) rows: u32,
    /// The shape's row this part starts at.
    pub(super) first: u32,
    pub(super) logits: wgpu::Buffer,
    pub(super) targets: wgpu::Buffer,
    /// Each row's column of its largest logit: a target that every computed kept set
    /// keeps (`--sampler`'s top-k and top-p).
    pub(super) top_targets: wgpu::Buffer,
    pub(super) mask: wgpu::Buffer,
    pub(super) advantages: wgpu::Buffer,
    pub(super) grad: wgpu::Buffer,
    /// Old and sampler log-probs, for the families that read them (`--families`).
    pub(super) old: wgpu::Buffer,
    pub(super) rollout: wgpu::Buffer,
    /// Per-row sampling temperatures in [0.7, 1.3] (`--sampler`).
    pub(super) temps: wgpu::Buffer,
    /// A given kept set of [`KEPT_IDS`] ids a row, the target among them, scattered
    /// over the vocabulary (`--sampler`): CSR offsets and ids.
    pub(super) keep_offsets: wgpu::Buffer,
    pub(super) keep_ids: wgpu::Buffer,
}

/// Ids a row of the benchmark's given kept sets (a top-k of 50 replayed).
pub const KEPT_IDS: u32 = 50;

/// The baseline's buffers for `rows` rows of one part, from its row `first`.
pub(super) struct UnfusedChunk {
    pub(super) part: usize,
    pub(super) first: u32,
    pub(super) rows: u32,
    pub(super) full_a: wgpu::Buffer,
    pub(super) full_b: wgpu::Buffer,
    pub(super) rowvec: wgpu::Buffer,
    pub(super) loss: wgpu::Buffer,
}

/// Bytes a CPU adapter (lavapipe, llvmpipe) can still allocate: its device memory is
/// this machine's RAM, and an allocation past it is not an error the device reports but
/// the kernel's out-of-memory killer. `None` for GPUs (they report their own out of
/// memory) and where the OS does not say.
fn cpu_memory_available(ctx: &Context) -> Option<u64> {
    if ctx.adapter_info().device_type != wgpu::DeviceType::Cpu {
        return None;
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `Err` with the reason when `bytes` would not fit the memory a CPU adapter has left
/// (keeping a fifth of it for everything else).
pub(super) fn check_cpu_memory(
    ctx: &Context,
    what: &str,
    bytes: u64,
) -> std::result::Result<(), String> {
    match cpu_memory_available(ctx) {
        Some(avail) if bytes > avail / 5 * 4 => Err(format!(
            "{what} need {:.1} GB, and a CPU adapter's memory is this machine's RAM, which \
             has {:.1} GB available",
            bytes as f64 / 1e9,
            avail as f64 / 1e9
        )),
        _ => Ok(()),
    }
}

/// Rows of `width` elements of `elem` bytes that fit one buffer of the device.
pub(super) fn rows_per_buffer(limits: &wgpu::Limits, width: u64, elem: u64) -> u64 {
    limits.max_buffer_size / (width * elem).max(1)
}

/// A pattern of moderate logits by element index, period [`PERIOD`]: twice the period
/// of bytes, so that a piece of the period starts anywhere in it.
const PERIOD: u64 = 1 << 18;

fn pattern(dtype: DType) -> Vec<u8> {
    (0..2 * PERIOD as u32)
        .flat_map(|i: u32| {
            let v = pattern_value(i % PERIOD as u32);
            match dtype {
                DType::F32 => v.to_le_bytes().to_vec(),
                DType::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
                DType::Bf16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
            }
        })
        .collect()
}

/// The pattern's element i (< PERIOD), in [−4, 4).
fn pattern_value(i: u32) -> f32 {
    ((i.wrapping_mul(2654435761) >> 16) as f32 / 65536.0 - 0.5) * 8.0
}

/// Each of rows `first .. first + n`'s column of its largest logit (the first of them),
/// as stored in `dtype`: the largest of each block of the period first, so that a row
/// costs a few blocks, not its width.
fn row_tops(dtype: DType, vocab: u64, first: u32, n: u32) -> Vec<u32> {
    const BLOCK: u64 = 1024;
    let stored = |i: u64| {
        let v = pattern_value((i % PERIOD) as u32);
        match dtype {
            DType::F32 => v,
            DType::F16 => half::f16::from_f32(v).to_f32(),
            DType::Bf16 => half::bf16::from_f32(v).to_f32(),
        }
    };
    let first_max = |from: u64, to: u64| -> (f32, u64) {
        (from..to).fold((f32::NEG_INFINITY, from), |(m, at), i| {
            let v = stored(i);
            if v > m {
                (v, i)
            } else {
                (m, at)
            }
        })
    };
    // blocks over two periods, so that a window that wraps needs no second pass
    let blocks: Vec<(f32, u64)> = (0..2 * PERIOD / BLOCK)
        .map(|b| first_max(b * BLOCK, (b + 1) * BLOCK))
        .collect();
    (first..first + n)
        .map(|r| {
            let start = r as u64 * vocab % PERIOD;
            let end = start + vocab.min(PERIOD);
            let mut best = first_max(start, end.min(start.div_ceil(BLOCK) * BLOCK));
            let mut b = start.div_ceil(BLOCK);
            while (b + 1) * BLOCK <= end {
                if blocks[b as usize].0 > best.0 {
                    best = blocks[b as usize];
                }
                b += 1;
            }
            let tail = first_max((b * BLOCK).max(start), end);
            if tail.0 > best.0 {
                best = tail;
            }
            (best.1 - start) as u32
        })
        .collect()
}

/// Rows per part: as many as one buffer holds, spread evenly over the parts.
fn rows_per_part(ctx: &Context, shape: BenchShape) -> Result<u32> {
    let limits = ctx.device().limits();
    let (rows, vocab) = (shape.rows as u64, shape.vocab as u64);
    let elem = shape.dtype.size();
    let per_part = rows_per_buffer(&limits, vocab, elem).min(rows);
    if per_part == 0 {
        return Err(Error::arg(
            "shape",
            format!(
                "{shape}: one row of logits ({} bytes) exceeds this device's largest buffer \
                 ({} bytes)",
                vocab * elem,
                limits.max_buffer_size
            ),
        ));
    }
    Ok(rows.div_ceil(rows.div_ceil(per_part)) as u32)
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Part {
    /// The parts of `shape`'s logits, and their inputs; an allocation the device cannot
    /// make is an error of this shape, not a panic.
    pub(super) fn make_all(ctx: &Context, shape: BenchShape) -> Result<Vec<Part>> {
        let per_part = rows_per_part(ctx, shape)?;
        check_cpu_memory(ctx, "its logits and gradient", 2 * shape.logits_bytes())
            .map_err(|why| Error::arg("shape", format!("{shape}: {why}")))?;
        let piece = pattern(shape.dtype);
        let mut parts = Vec::new();
        ctx.scoped(|| {
            let mut first = 0u32;
            while first < shape.rows {
                let n = per_part.min(shape.rows - first);
                parts.push(Part::make(ctx, shape, &piece, first, n));
                first += n;
            }
        })?;
        Ok(parts)
    }

    /// Rows `first .. first + n`: the part continues the pattern where the previous
    /// part stopped, so parts hold the logits one buffer would.
    fn make(ctx: &Context, shape: BenchShape, piece: &[u8], first: u32, n: u32) -> Part {
        let (vocab, elem) = (shape.vocab as u64, shape.dtype.size());
        // whole words (16-bit logits may end mid-word)
        let bytes = (n as u64 * vocab * elem).div_ceil(4) * 4;
        let logits = ctx.buffer("bench logits", bytes, STORAGE);
        let (mut at, mut element) = (0, first as u64 * vocab);
        while at < bytes {
            let start = ((element % PERIOD) * elem) as usize;
            let k = (bytes - at).min(PERIOD * elem / 4 * 4);
            ctx.queue()
                .write_buffer(&logits, at, &piece[start..start + k as usize]);
            at += k;
            element += k / elem;
        }
        let rows = first..first + n;
        let targets: Vec<u32> = rows.clone().map(|r| (r * 7919) % shape.vocab).collect();
        let tops = row_tops(shape.dtype, vocab, first, n);
        let advantages: Vec<f32> = rows
            .clone()
            .map(|r| if r % 3 == 0 { -0.5 } else { 1.0 })
            .collect();
        let temps: Vec<f32> = rows.clone().map(|r| 0.7 + 0.1 * (r % 7) as f32).collect();
        // the target and 49 others, a prime stride apart (reads scattered over the row)
        let k = KEPT_IDS.min(shape.vocab);
        let ids: Vec<u32> = targets
            .iter()
            .flat_map(|&y| {
                (0..k).map(move |i| ((y as u64 + i as u64 * 2999) % shape.vocab as u64) as u32)
            })
            .collect();
        let offsets: Vec<u32> = (0..=n).map(|r| r * k).collect();
        let f32s = |label, v: f32| ctx.upload(label, bytemuck::cast_slice(&vec![v; n as usize]));
        Part {
            rows: n,
            first,
            logits,
            targets: ctx.upload("bench targets", bytemuck::cast_slice(&targets)),
            top_targets: ctx.upload("bench top targets", bytemuck::cast_slice(&tops)),
            mask: f32s("bench mask", 1.0),
            advantages: ctx.upload("bench advantages", bytemuck::cast_slice(&advantages)),
            grad: ctx.buffer("bench gradient", bytes, STORAGE),
            old: f32s("bench old", -12.0),
            rollout: f32s("bench rollout", -12.3),
            temps: ctx.upload("bench temperatures", bytemuck::cast_slice(&temps)),
            keep_offsets: ctx.upload("bench keep_offsets", bytemuck::cast_slice(&offsets)),
            keep_ids: ctx.upload("bench keep_ids", bytemuck::cast_slice(&ids)),
        }
    }
}

/// The baseline's intermediates, in chunks of rows whose `[rows, V]` f32 fit one
/// buffer, or why they cannot be made.
pub(super) fn unfused_buffers(
    ctx: &Context,
    shape: BenchShape,
    parts: &[Part],
) -> std::result::Result<Vec<UnfusedChunk>, String> {
    let limits = ctx.device().limits();
    let vocab = shape.vocab as u64;
    let per_chunk = rows_per_buffer(&limits, vocab, 4);
    if per_chunk == 0 {
        return Err(format!(
            "one row of f32 intermediates ({} bytes) exceeds the largest buffer",
            vocab * 4
        ));
    }
    // (the logits and gradient are allocated already)
    check_cpu_memory(
        ctx,
        "its [T, V] f32 intermediates",
        2 * shape.rows as u64 * vocab * 4,
    )?;
    let mut chunks = Vec::new();
    let made = ctx.scoped(|| {
        for (i, p) in parts.iter().enumerate() {
            let mut first = 0u32;
            while first < p.rows {
                let n = (per_chunk.min((p.rows - first) as u64)) as u32;
                let full = n as u64 * vocab * 4;
                let rowvec = ctx.buffer("baseline rows", n as u64 * 16, STORAGE);
                let v: Vec<[f32; 4]> = (p.first + first..p.first + first + n)
                    .map(|r| [1.0, if r % 3 == 0 { -0.5 } else { 1.0 }, 0.0, 0.0])
                    .collect();
                ctx.queue()
                    .write_buffer(&rowvec, 0, bytemuck::cast_slice(&v));
                chunks.push(UnfusedChunk {
                    part: i,
                    first,
                    rows: n,
                    full_a: ctx.buffer(
                        "baseline out",
                        full,
                        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    ),
                    full_b: ctx.buffer("baseline grad_out", full, wgpu::BufferUsages::STORAGE),
                    rowvec,
                    loss: ctx.buffer("baseline loss", 16, STORAGE),
                });
                first += n;
            }
        }
    });
    match made {
        Ok(()) => Ok(chunks),
        Err(e) => Err(format!(
            "its {} bytes of [T, V] f32 intermediates could not be allocated ({e})",
            2 * shape.rows as u64 * vocab * 4
        )),
    }
}
