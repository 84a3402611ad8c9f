//! The measurements behind `cargo bench` and the CLI's `bench`: the fused forward +
//! backward, the unfused baseline (the seed's PyTorch pattern, one kernel per op, every
//! intermediate materialised), and the device's copy bandwidth as the roofline.
//!
//! Times are GPU time from timestamp queries written around a batch of iterations when
//! the adapter has `TIMESTAMP_QUERY_INSIDE_ENCODERS`, wall time of the batch otherwise;
//! each sample is one batch, and the median of the samples is reported.

use std::time::{Duration, Instant};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::baseline::{self, BaselineBuffers};
use crate::kernels::row_stats::RowStatsBuffers;
use crate::loss::{Advantages, GradView, Gradient, LossBuffers, LossInputs, LossPart, PolicyLoss};
use crate::view::{DType, F32View, LogitsView, RowLayout, TargetsView};
use crate::{LossConfig, VocabShards};

/// One benchmark shape: `rows × vocab` logits of `dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchShape {
    pub rows: u32,
    pub vocab: u32,
    pub dtype: DType,
}

impl BenchShape {
    /// The shapes for a CPU rasteriser such as lavapipe, and, with `large`, the real-GPU
    /// shape of a long-context batch (T = 16384, V = 151936, bf16).
    pub fn defaults(large: bool) -> Vec<BenchShape> {
        let mut v = Vec::new();
        for (rows, vocab) in [(256, 32000), (256, 151936), (2048, 32000)] {
            for dtype in [DType::F32, DType::Bf16] {
                v.push(BenchShape { rows, vocab, dtype });
            }
        }
        if large {
            v.push(BenchShape {
                rows: 16384,
                vocab: 151936,
                dtype: DType::Bf16,
            });
        }
        v
    }

    /// Bytes of one pass over the logits.
    pub fn logits_bytes(&self) -> u64 {
        self.rows as u64 * self.vocab as u64 * self.dtype.size()
    }
}

impl std::fmt::Display for BenchShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} {}", self.rows, self.vocab, self.dtype)
    }
}

/// One buffer's worth of a shape's rows, and the loss inputs beside them.
struct Part {
    rows: u32,
    /// The shape's row this part starts at.
    first: u32,
    logits: wgpu::Buffer,
    targets: wgpu::Buffer,
    mask: wgpu::Buffer,
    advantages: wgpu::Buffer,
    grad: wgpu::Buffer,
    /// Old and sampler log-probs, for the families that read them (`--families`).
    old: wgpu::Buffer,
    rollout: wgpu::Buffer,
}

/// The baseline's buffers for `rows` rows of one part, from its row `first`.
struct UnfusedChunk {
    part: usize,
    first: u32,
    rows: u32,
    full_a: wgpu::Buffer,
    full_b: wgpu::Buffer,
    rowvec: wgpu::Buffer,
    loss: wgpu::Buffer,
}

/// The buffers of one shape, ready to record any of the measured workloads. Logits
/// larger than the device's largest buffer are held in parts, each of them one
/// sequence, and the loss runs over them as one batch ([`PolicyLoss::record_parts`]).
pub struct Workload {
    ctx: Context,
    pub shape: BenchShape,
    parts: Vec<Part>,
    out: LossBuffers,
    stats: RowStatsBuffers,
    loss: PolicyLoss,
    /// The baseline's `[T, V]` f32 intermediates (in chunks of rows that fit one
    /// buffer each), or why the device cannot hold them.
    unfused: std::result::Result<Vec<UnfusedChunk>, String>,
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
fn check_cpu_memory(ctx: &Context, what: &str, bytes: u64) -> std::result::Result<(), String> {
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
fn rows_per_buffer(limits: &wgpu::Limits, width: u64, elem: u64) -> u64 {
    limits.max_buffer_size / (width * elem).max(1)
}

impl Workload {
    /// Allocates and fills the buffers (logits with a cheap pattern, on the device).
    pub fn new(ctx: &Context, shape: BenchShape) -> Result<Self> {
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
        check_cpu_memory(ctx, "its logits and gradient", 2 * shape.logits_bytes())
            .map_err(|why| Error::arg("shape", format!("{shape}: {why}")))?;
        let n_parts = rows.div_ceil(per_part);
        let per_part = rows.div_ceil(n_parts) as u32;
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        // a pattern of moderate logits by element index (period 2^18), written in pieces
        // (no T×V host buffer); twice the period, so that any start has a whole piece
        const PERIOD: u64 = 1 << 18;
        let piece: Vec<u8> = (0..2 * PERIOD as u32)
            .flat_map(|i: u32| {
                let i = i % PERIOD as u32;
                let v = ((i.wrapping_mul(2654435761) >> 16) as f32 / 65536.0 - 0.5) * 8.0;
                match shape.dtype {
                    DType::F32 => v.to_le_bytes().to_vec(),
                    DType::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
                    DType::Bf16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
                }
            })
            .collect();
        let mut parts = Vec::new();
        // an allocation the device cannot make is an error of this shape, not a panic
        ctx.scoped(|| {
            let mut first = 0u32;
            while first < shape.rows {
                let n = per_part.min(shape.rows - first);
                // whole words (16-bit logits may end mid-word)
                let bytes = (n as u64 * vocab * elem).div_ceil(4) * 4;
                let logits = ctx.buffer("bench logits", bytes, storage);
                // the part continues the pattern where the previous part stopped, so
                // parts hold the logits one buffer would
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
                let advantages: Vec<f32> =
                    rows.map(|r| if r % 3 == 0 { -0.5 } else { 1.0 }).collect();
                parts.push(Part {
                    rows: n,
                    first,
                    logits,
                    targets: ctx.upload("bench targets", bytemuck::cast_slice(&targets)),
                    mask: ctx.upload(
                        "bench mask",
                        bytemuck::cast_slice(&vec![1.0f32; n as usize]),
                    ),
                    advantages: ctx.upload("bench advantages", bytemuck::cast_slice(&advantages)),
                    grad: ctx.buffer("bench gradient", bytes, storage),
                    old: ctx.upload(
                        "bench old",
                        bytemuck::cast_slice(&vec![-12.0f32; n as usize]),
                    ),
                    rollout: ctx.upload(
                        "bench rollout",
                        bytemuck::cast_slice(&vec![-12.3f32; n as usize]),
                    ),
                });
                first += n;
            }
        })?;
        let unfused = Self::unfused_buffers(ctx, shape, &parts);
        Ok(Workload {
            ctx: ctx.clone(),
            shape,
            out: LossBuffers::new(ctx, shape.rows),
            stats: RowStatsBuffers::new(ctx, shape.rows),
            // the seed's REINFORCE with token-mean: the computation the baseline does
            loss: PolicyLoss::new(
                ctx,
                LossConfig {
                    mode: crate::PolicyLossMode::Reinforce,
                    ..LossConfig::default()
                },
            )?,
            parts,
            unfused,
        })
    }

    /// The baseline's intermediates, in chunks of rows whose `[rows, V]` f32 fit one
    /// buffer, or why they cannot be made.
    fn unfused_buffers(
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
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let mut chunks = Vec::new();
        let made = ctx.scoped(|| {
            for (i, p) in parts.iter().enumerate() {
                let mut first = 0u32;
                while first < p.rows {
                    let n = (per_chunk.min((p.rows - first) as u64)) as u32;
                    let full = n as u64 * vocab * 4;
                    let rowvec = ctx.buffer("baseline rows", n as u64 * 16, storage);
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
                        loss: ctx.buffer("baseline loss", 16, storage),
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

    /// How many buffers the logits are held in.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Part `p`'s logits: one sequence of its rows.
    fn logits_view<'a>(&self, p: &'a Part) -> LogitsView<'a> {
        LogitsView::new(&p.logits, self.shape.dtype, p.rows, self.shape.vocab)
    }

    /// The loss's inputs, part by part, with `gradient(part)`.
    fn parts_inputs<'a>(
        &'a self,
        gradient: impl Fn(&'a Part) -> Gradient<'a>,
    ) -> Vec<(LossInputs<'a>, Gradient<'a>)> {
        self.parts
            .iter()
            .map(|p| {
                let inputs = LossInputs::new(
                    self.logits_view(p),
                    TargetsView::new(&p.targets),
                    F32View::new(&p.mask),
                    Advantages::PerToken(F32View::new(&p.advantages)),
                );
                (inputs, gradient(p))
            })
            .collect()
    }

    /// `loss`'s forward + backward on this shape, with old (and, for a rollout
    /// correction, the sampler's) log-probs: the gradient in the logits' dtype into its
    /// own buffer.
    pub fn record_loss(&self, loss: &PolicyLoss, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let (dtype, vocab) = (self.shape.dtype, self.shape.vocab);
        let rollout = loss.config().rollout_correction.is_some();
        let parts: Vec<LossPart<'_>> = self
            .parts
            .iter()
            .zip(self.parts_inputs(|p| Gradient::Into(GradView::new(&p.grad, dtype, vocab))))
            .map(|(p, (inputs, gradient))| {
                let part = LossPart::new(inputs.with_old_logprobs(F32View::new(&p.old)), gradient);
                match rollout {
                    true => part.with_rollout_logprobs(F32View::new(&p.rollout)),
                    false => part,
                }
            })
            .collect();
        loss.record_parts(encoder, &parts, &self.out.outputs())
    }

    /// This library's forward + backward: loss, metrics, and the gradient in the logits'
    /// dtype into its own buffer.
    pub fn record_fused(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let (dtype, vocab) = (self.shape.dtype, self.shape.vocab);
        let parts = self.parts_inputs(|p| Gradient::Into(GradView::new(&p.grad, dtype, vocab)));
        self.loss.record_parts(encoder, &parts, &self.out.outputs())
    }

    /// Ranks `ranks` of a vocabulary split into `shards`, on this one device: each
    /// rank's partials of its columns (a strided view of the logits) into its slot of
    /// `gathered`, then each rank's loss and the gradient of its columns, as
    /// [`record_fused`](Self::record_fused) with the vocabulary split. All ranks in one
    /// call stand for the whole exchange with the all-gather free; one rank is one
    /// device's share when each rank has its own.
    pub fn record_sharded(
        &self,
        shards: &VocabShards,
        ranks: std::ops::Range<usize>,
        gathered: &wgpu::Buffer,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        let [p] = &self.parts[..] else {
            return Err(Error::arg(
                "shape",
                format!(
                    "{}: the sharded bench needs the logits in one buffer",
                    self.shape
                ),
            ));
        };
        let (dtype, vocab) = (self.shape.dtype, self.shape.vocab as u64);
        let columns = |k: usize| RowLayout {
            offset: shards.offset(k) as u64,
            row_stride: vocab,
            rows_per_seq: u32::MAX,
            seq_stride: 0,
        };
        let inputs = |k: usize| {
            let logits = LogitsView {
                buffer: &p.logits,
                dtype,
                rows: p.rows,
                vocab: shards.width(k),
                layout: columns(k),
            };
            LossInputs::new(
                logits,
                TargetsView::new(&p.targets),
                F32View::new(&p.mask),
                Advantages::PerToken(F32View::new(&p.advantages)),
            )
        };
        for k in ranks.clone() {
            let i = inputs(k);
            let at = F32View::at(gathered, k as u64 * shards.partial_bytes(p.rows));
            self.loss
                .record_shard_partials(encoder, shards, k, &i.logits, &i.targets, at)?;
        }
        for k in ranks {
            let gradient = Gradient::Into(GradView {
                buffer: &p.grad,
                dtype,
                layout: columns(k),
            });
            self.loss.record_shard_loss(
                encoder,
                shards,
                k,
                (inputs(k), gradient),
                F32View::new(gathered),
                &self.out.outputs(),
            )?;
        }
        Ok(())
    }

    /// The loss forward only: loss, metrics, log-probs and entropies, no gradient.
    pub fn record_forward(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let parts = self.parts_inputs(|_| Gradient::None);
        self.loss.record_parts(encoder, &parts, &self.out.outputs())
    }

    /// The row kernel alone: one read of the logits for log-sum-exp, log-prob, entropy.
    pub fn record_row_stats(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let s = &self.stats;
        for p in &self.parts {
            let at = |b| F32View::at(b, p.first as u64 * 4);
            let out = crate::RowStatsOutputs {
                lse: at(&s.lse),
                logp: at(&s.logp),
                entropy: at(&s.entropy),
            };
            self.ctx.record_row_stats(
                encoder,
                &self.logits_view(p),
                &TargetsView::new(&p.targets),
                1.0,
                &out,
            )?;
        }
        Ok(())
    }

    /// The loss's O(rows) pre-pass alone (per-row inputs, the sequences' weights).
    pub fn record_prepare(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.loss
            .record_prepare(encoder, &self.parts_inputs(|_| Gradient::None))
    }

    /// Whether the device can hold the baseline's `[T, V]` f32 intermediates.
    pub fn has_unfused(&self) -> bool {
        self.unfused.is_ok()
    }

    /// Why the baseline cannot run on this shape here, if it cannot.
    pub fn unfused_unavailable(&self) -> Option<&str> {
        self.unfused.as_ref().err().map(String::as_str)
    }

    fn unfused_chunks(&self) -> Result<&[UnfusedChunk]> {
        self.unfused
            .as_deref()
            .map_err(|why| Error::arg("shape", format!("no unfused baseline: {why}")))
    }

    /// The unfused baseline: log_softmax, gather, masked mean, scatter, log_softmax
    /// backward, with `[T, V]` f32 intermediates (several buffers of them where one
    /// would exceed the device's largest buffer; each chunk of rows takes its own
    /// token-mean, the same work).
    pub fn record_unfused(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        for c in self.unfused_chunks()? {
            let p = &self.parts[c.part];
            let offset = c.first as u64 * self.shape.vocab as u64 * self.shape.dtype.size();
            let mut logits = self.logits_view(p).with_byte_offset(offset)?;
            logits.rows = c.rows;
            baseline::record(
                &self.ctx,
                encoder,
                &logits,
                &BaselineBuffers {
                    targets: &p.targets,
                    targets_first: c.first as u64,
                    full_a: &c.full_a,
                    full_b: &c.full_b,
                    rowvec: &c.rowvec,
                    loss: &c.loss,
                },
            )?;
        }
        Ok(())
    }

    /// Runs the fused loss once and reads the loss back.
    pub fn fused_loss(&self) -> Result<f32> {
        let mut enc = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        self.record_fused(&mut enc)?;
        let got = self.ctx.read_back(enc, &[(&self.out.metrics, 4)])?;
        Ok(f32::from_le_bytes(got[0][..4].try_into().expect("4 bytes")))
    }

    /// Runs the fused and the unfused computation once and returns |loss difference|
    /// and the largest |gradient difference| (the fused gradient is in the logits'
    /// dtype, the baseline's in f32): both must compute the same thing for the speed-up
    /// to mean anything. For shapes held in one buffer and one chunk of baseline.
    pub fn compare(&self) -> Result<(f64, f64)> {
        let chunks = self.unfused_chunks()?;
        let ([p], [c]) = (&self.parts[..], chunks) else {
            return Err(Error::arg(
                "shape",
                "compare needs the shape in one buffer and one chunk of baseline",
            ));
        };
        let mut enc = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        self.record_fused(&mut enc)?;
        self.record_unfused(&mut enc)?;
        let n = self.shape.rows as u64 * self.shape.vocab as u64;
        let got = self.ctx.read_back(
            enc,
            &[
                (&self.out.metrics, 4),
                (&c.loss, 4),
                (&p.grad, n * self.shape.dtype.size()),
                (&c.full_a, n * 4),
            ],
        )?;
        let f = |b: &[u8]| f32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as f64;
        let fused = crate::HostGrad {
            dtype: self.shape.dtype,
            bytes: got[2].clone(),
        }
        .to_f32();
        let unfused: Vec<f32> = bytemuck::pod_collect_to_vec(&got[3]);
        let max_diff = fused
            .iter()
            .zip(&unfused)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        Ok(((f(&got[0]) - f(&got[1])).abs(), max_diff))
    }

    /// The roofline by the copy engine: the logits' bytes copied buffer to buffer.
    pub fn record_copy_buffer(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        for p in &self.parts {
            let bytes = p.logits.size() / 16 * 16;
            self.ctx
                .scoped(|| encoder.copy_buffer_to_buffer(&p.logits, 0, &p.grad, 0, bytes))?;
        }
        Ok(())
    }

    /// The roofline through the shader cores: the same bytes copied by a trivial kernel.
    pub fn record_copy_kernel(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        for p in &self.parts {
            let bytes = p.logits.size() / 16 * 16;
            baseline::record_copy(&self.ctx, encoder, &p.logits, &p.grad, bytes)?;
        }
        Ok(())
    }
}

/// Medians of a measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Median time of one iteration, in milliseconds.
    pub median_ms: f64,
    pub samples: usize,
    /// GPU time from timestamps (true) or wall time (false).
    pub gpu_time: bool,
}

/// Times `record` (one iteration per call): batches of iterations per sample, the
/// median over samples, stopping after `samples` or `budget`.
pub fn time(
    ctx: &Context,
    samples: usize,
    budget: Duration,
    mut record: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<Timing> {
    let ts_features =
        wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
    let gpu_time = ctx.device().features().contains(ts_features);
    let queries = gpu_time.then(|| {
        ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        })
    });
    let resolve = ctx.buffer(
        "bench timestamps",
        16,
        wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
    );
    let mut run = |iters: usize| -> Result<f64> {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        if let Some(q) = &queries {
            encoder.write_timestamp(q, 0);
        }
        for _ in 0..iters {
            record(&mut encoder)?;
        }
        let start = Instant::now();
        if let Some(q) = &queries {
            encoder.write_timestamp(q, 1);
            encoder.resolve_query_set(q, 0..2, &resolve, 0);
            let got = ctx.read_back(encoder, &[(&resolve, 16)])?;
            let t: Vec<u64> = bytemuck::pod_collect_to_vec(&got[0]);
            let ns = t[1].saturating_sub(t[0]) as f64 * ctx.queue().get_timestamp_period() as f64;
            Ok(ns / 1e6 / iters as f64)
        } else {
            ctx.submit_and_wait(encoder)?;
            Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
        }
    };
    // warm-up (pipelines, first-touch), then batches of ~50 ms
    let first = run(1)?;
    let iters = ((50.0 / first.max(1e-3)) as usize).clamp(1, 50);
    let deadline = Instant::now() + budget;
    let mut times = Vec::new();
    while times.len() < samples.max(1) && (times.len() < 3 || Instant::now() < deadline) {
        times.push(run(iters)?);
    }
    times.sort_by(f64::total_cmp);
    Ok(Timing {
        median_ms: times[times.len() / 2],
        samples: times.len(),
        gpu_time,
    })
}

/// One line of the benchmark table.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    pub adapter: String,
    /// The paths the fused kernels used (f16, subgroups or fallback).
    pub paths: String,
    pub shape: BenchShape,
    /// Buffers the logits were held in (more than one where they exceed the largest).
    pub parts: usize,
    pub fused: Timing,
    pub unfused: Option<Timing>,
    /// Why the unfused baseline did not run, when it did not.
    pub unfused_skipped: Option<String>,
    pub copy_buffer: Timing,
    pub copy_kernel: Timing,
}

impl BenchRow {
    /// Effective bandwidth of the fused kernels, counting 2 reads and 1 write of T × V.
    pub fn fused_gbs(&self) -> f64 {
        3.0 * self.shape.logits_bytes() as f64 / (self.fused.median_ms * 1e6)
    }

    /// The faster of the two copies, as bytes read + written per second.
    pub fn copy_gbs(&self) -> f64 {
        let ms = self.copy_buffer.median_ms.min(self.copy_kernel.median_ms);
        2.0 * (self.shape.logits_bytes() / 16 * 16) as f64 / (ms * 1e6)
    }

    pub fn pct_of_copy(&self) -> f64 {
        100.0 * self.fused_gbs() / self.copy_gbs()
    }

    pub fn speedup(&self) -> Option<f64> {
        self.unfused.map(|u| u.median_ms / self.fused.median_ms)
    }
}

/// The fused loss taken apart (`bench --stages`), each stage timed alone on one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct StageRow {
    pub adapter: String,
    pub paths: String,
    pub shape: BenchShape,
    /// Buffers the logits were held in.
    pub parts: usize,
    /// `prepare`: the O(rows) pre-pass (one workgroup).
    pub prepare: Timing,
    /// The row kernel alone, forward statistics (one read of the logits).
    pub row_stats: Timing,
    /// The loss forward only (prepare, row kernel, reduce).
    pub forward: Timing,
    /// The loss forward + backward, as the main table's "fused".
    pub fused: Timing,
}

/// The loss families `bench --families` times: the configuration, and its name.
pub fn families() -> Vec<(&'static str, LossConfig)> {
    use crate::{PolicyLossMode as M, RolloutCorrection, RolloutLevel, RolloutMode};
    let base = LossConfig::default();
    let mode = |mode| LossConfig { mode, ..base };
    vec![
        ("ppo_clip", base),
        ("cispo", mode(M::Cispo)),
        ("sapo", mode(M::Sapo)),
        ("gspo", mode(M::Gspo)),
        ("clip_cov", mode(M::ClipCov)),
        ("kl_cov", mode(M::KlCov)),
        (
            "entropy mask 0.2",
            LossConfig {
                top_entropy_quantile: Some(0.2),
                ..base
            },
        ),
        (
            "entropy top-k 0.2",
            LossConfig {
                top_entropy_quantile: Some(0.2),
                top_entropy_renormalize: true,
                ..base
            },
        ),
        (
            "rollout TIS token",
            LossConfig {
                rollout_correction: Some(RolloutCorrection::new(
                    RolloutLevel::Token,
                    RolloutMode::Truncate,
                )),
                ..base
            },
        ),
    ]
}

/// One loss family timed on one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyRow {
    pub adapter: String,
    pub shape: BenchShape,
    pub family: &'static str,
    /// Launches per call (one chunk, one part).
    pub launches: usize,
    pub fused: Timing,
}

/// Times every family of [`families`] on one shape, side by side (forward + backward,
/// old log-probs given).
pub fn measure_families(
    ctx: &Context,
    shape: BenchShape,
    samples: usize,
    budget: Duration,
) -> Result<Vec<FamilyRow>> {
    let w = Workload::new(ctx, shape)?;
    families()
        .into_iter()
        .map(|(family, cfg)| {
            let loss = PolicyLoss::new(ctx, cfg)?;
            Ok(FamilyRow {
                adapter: ctx.describe(),
                shape,
                family,
                launches: loss.launches(),
                fused: time(ctx, samples, budget, |e| w.record_loss(&loss, e))?,
            })
        })
        .collect()
}

/// The unsharded loss against the same loss over a vocabulary split into shards on one
/// device (`bench --vocab-shards K`).
#[derive(Clone, Debug)]
pub struct ShardRow {
    pub adapter: String,
    pub shape: BenchShape,
    pub shards: Vec<u32>,
    /// Forward + backward, whole rows ([`Workload::record_fused`]).
    pub unsharded: Timing,
    /// Every shard's partials, then every shard's loss and gradient columns.
    pub sharded: Timing,
    /// Rank 0's share: its partials and its loss (one device of K).
    pub one_rank: Timing,
    /// Bytes each rank receives per row in the all-gather (K × 16).
    pub gathered_bytes_per_row: u64,
}

/// Times the loss of one shape unsharded and split into `k` shards
/// ([`VocabShards::even`]), side by side.
pub fn measure_shards(
    ctx: &Context,
    shape: BenchShape,
    k: u32,
    samples: usize,
    budget: Duration,
) -> Result<ShardRow> {
    let w = Workload::new(ctx, shape)?;
    let shards = VocabShards::even(shape.vocab, k)?;
    let gathered = ctx.buffer(
        "gathered partials",
        shards.gathered_bytes(shape.rows).max(16),
        wgpu::BufferUsages::STORAGE,
    );
    let all = 0..shards.len();
    Ok(ShardRow {
        adapter: ctx.describe(),
        shape,
        shards: shards.widths(),
        unsharded: time(ctx, samples, budget, |e| w.record_fused(e))?,
        sharded: time(ctx, samples, budget, |e| {
            w.record_sharded(&shards, all.clone(), &gathered, e)
        })?,
        one_rank: time(ctx, samples, budget, |e| {
            w.record_sharded(&shards, 0..1, &gathered, e)
        })?,
        gathered_bytes_per_row: shards.gathered_bytes(1),
    })
}

/// Times the stages of one shape on `ctx`, side by side.
pub fn measure_stages(
    ctx: &Context,
    shape: BenchShape,
    samples: usize,
    budget: Duration,
) -> Result<StageRow> {
    let w = Workload::new(ctx, shape)?;
    Ok(StageRow {
        adapter: ctx.describe(),
        paths: ctx.paths().describe().to_string(),
        shape,
        parts: w.parts(),
        prepare: time(ctx, samples, budget, |e| w.record_prepare(e))?,
        row_stats: time(ctx, samples, budget, |e| w.record_row_stats(e))?,
        forward: time(ctx, samples, budget, |e| w.record_forward(e))?,
        fused: time(ctx, samples, budget, |e| w.record_fused(e))?,
    })
}

/// Measures one shape on `ctx`: fused, unfused (where the device holds it) and the
/// copies, side by side.
pub fn measure(
    ctx: &Context,
    shape: BenchShape,
    samples: usize,
    budget: Duration,
) -> Result<BenchRow> {
    let w = Workload::new(ctx, shape)?;
    let fused = time(ctx, samples, budget, |e| w.record_fused(e))?;
    let unfused = if w.has_unfused() {
        Some(time(ctx, samples, budget, |e| w.record_unfused(e))?)
    } else {
        None
    };
    let copy_buffer = time(ctx, samples, budget, |e| w.record_copy_buffer(e))?;
    let copy_kernel = time(ctx, samples, budget, |e| w.record_copy_kernel(e))?;
    Ok(BenchRow {
        adapter: ctx.describe(),
        paths: ctx.paths().describe().to_string(),
        shape,
        parts: w.parts(),
        fused,
        unfused,
        unfused_skipped: w.unfused_unavailable().map(str::to_string),
        copy_buffer,
        copy_kernel,
    })
}

/// Measures every shape on `ctx`, side by side.
pub fn run(
    ctx: &Context,
    shapes: &[BenchShape],
    samples: usize,
    budget: Duration,
) -> Result<Vec<BenchRow>> {
    shapes
        .iter()
        .map(|&shape| measure(ctx, shape, samples, budget))
        .collect()
}
