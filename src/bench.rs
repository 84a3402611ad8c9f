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
use crate::loss::{Advantages, GradView, Gradient, LossBuffers, LossInputs, PolicyLoss};
use crate::view::{DType, F32View, LogitsView, TargetsView};
use crate::LossConfig;

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

/// The buffers of one shape, ready to record any of the measured workloads.
pub struct Workload {
    ctx: Context,
    pub shape: BenchShape,
    logits: wgpu::Buffer,
    targets: wgpu::Buffer,
    mask: wgpu::Buffer,
    advantages: wgpu::Buffer,
    grad: wgpu::Buffer,
    out: LossBuffers,
    stats: RowStatsBuffers,
    loss: PolicyLoss,
    /// The baseline's `[T, V]` f32 intermediates, when the device can hold them.
    unfused: Option<(wgpu::Buffer, wgpu::Buffer, wgpu::Buffer, wgpu::Buffer)>,
}

impl Workload {
    /// Allocates and fills the buffers (logits with a cheap pattern, on the device).
    pub fn new(ctx: &Context, shape: BenchShape) -> Result<Self> {
        let limits = ctx.device().limits();
        let bytes = shape.logits_bytes();
        if bytes > limits.max_buffer_size {
            return Err(Error::arg(
                "shape",
                format!(
                    "{shape}: {bytes} bytes of logits exceed this device's largest buffer ({})",
                    limits.max_buffer_size
                ),
            ));
        }
        let rows = shape.rows as usize;
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let logits = ctx.buffer("bench logits", bytes, storage);
        // a pattern of moderate logits, written once in pieces (no T×V host buffer)
        let piece: Vec<u8> = (0..(1 << 20) / 4)
            .flat_map(|i: u32| {
                let v = ((i.wrapping_mul(2654435761) >> 16) as f32 / 65536.0 - 0.5) * 8.0;
                match shape.dtype {
                    DType::F32 => v.to_le_bytes().to_vec(),
                    DType::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
                    DType::Bf16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
                }
            })
            .collect();
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(piece.len() as u64);
            ctx.queue().write_buffer(&logits, at, &piece[..n as usize]);
            at += n;
        }
        let targets: Vec<u32> = (0..shape.rows).map(|r| (r * 7919) % shape.vocab).collect();
        let targets = ctx.upload("bench targets", bytemuck::cast_slice(&targets));
        let mask = ctx.upload("bench mask", bytemuck::cast_slice(&vec![1.0f32; rows]));
        let advantages: Vec<f32> = (0..rows)
            .map(|r| if r % 3 == 0 { -0.5 } else { 1.0 })
            .collect();
        let advantages = ctx.upload("bench advantages", bytemuck::cast_slice(&advantages));
        let grad = ctx.buffer("bench gradient", bytes, storage);
        let full = shape.rows as u64 * shape.vocab as u64 * 4;
        let unfused = (full <= limits.max_buffer_size).then(|| {
            (
                ctx.buffer(
                    "baseline out",
                    full,
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                ),
                ctx.buffer("baseline grad_out", full, wgpu::BufferUsages::STORAGE),
                ctx.buffer("baseline rows", rows as u64 * 16, storage),
                ctx.buffer("baseline loss", 16, storage),
            )
        });
        if let Some((_, _, rowvec, _)) = &unfused {
            let v: Vec<[f32; 4]> = (0..rows)
                .map(|r| [1.0, if r % 3 == 0 { -0.5 } else { 1.0 }, 0.0, 0.0])
                .collect();
            ctx.queue()
                .write_buffer(rowvec, 0, bytemuck::cast_slice(&v));
        }
        Ok(Workload {
            ctx: ctx.clone(),
            shape,
            logits,
            targets,
            mask,
            advantages,
            grad,
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
            unfused,
        })
    }

    fn logits_view(&self) -> LogitsView<'_> {
        LogitsView::new(
            &self.logits,
            self.shape.dtype,
            self.shape.rows,
            self.shape.vocab,
        )
    }

    /// The loss's inputs: one sequence of every row, per-token advantages.
    fn inputs(&self) -> LossInputs<'_> {
        LossInputs::new(
            self.logits_view(),
            TargetsView::new(&self.targets),
            F32View::new(&self.mask),
            Advantages::PerToken(F32View::new(&self.advantages)),
        )
    }

    /// This library's forward + backward: loss, metrics, and the gradient in the logits'
    /// dtype into its own buffer.
    pub fn record_fused(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let grad = Gradient::Into(GradView::new(
            &self.grad,
            self.shape.dtype,
            self.shape.vocab,
        ));
        self.loss
            .record(encoder, &self.inputs(), grad, &self.out.outputs())
    }

    /// The loss forward only: loss, metrics, log-probs and entropies, no gradient.
    pub fn record_forward(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.loss
            .record(encoder, &self.inputs(), Gradient::None, &self.out.outputs())
    }

    /// The row kernel alone: one read of the logits for log-sum-exp, log-prob, entropy.
    pub fn record_row_stats(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.ctx.record_row_stats(
            encoder,
            &self.logits_view(),
            &TargetsView::new(&self.targets),
            1.0,
            &self.stats.outputs(),
        )
    }

    /// The loss's O(rows) pre-pass alone (per-row inputs, the sequences' weights).
    pub fn record_prepare(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.loss.record_prepare(encoder, &self.inputs())
    }

    /// Whether the device can hold the baseline's `[T, V]` f32 intermediates.
    pub fn has_unfused(&self) -> bool {
        self.unfused.is_some()
    }

    /// The unfused baseline: log_softmax, gather, masked mean, scatter, log_softmax
    /// backward, with `[T, V]` f32 intermediates.
    pub fn record_unfused(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let (full_a, full_b, rowvec, loss) = self.unfused.as_ref().ok_or_else(|| {
            Error::arg(
                "shape",
                "the baseline's [T, V] f32 buffers do not fit this device",
            )
        })?;
        baseline::record(
            &self.ctx,
            encoder,
            &self.logits_view(),
            &BaselineBuffers {
                targets: &self.targets,
                full_a,
                full_b,
                rowvec,
                loss,
            },
        )
    }

    /// Runs the fused and the unfused computation once and returns |loss difference|
    /// and the largest |gradient difference| (the fused gradient is in the logits'
    /// dtype, the baseline's in f32): both must compute the same thing for the speed-up
    /// to mean anything.
    pub fn compare(&self) -> Result<(f64, f64)> {
        let (full_a, _, _, loss) = self.unfused.as_ref().ok_or_else(|| {
            Error::arg(
                "shape",
                "the baseline's [T, V] f32 buffers do not fit this device",
            )
        })?;
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
                (loss, 4),
                (&self.grad, n * self.shape.dtype.size()),
                (full_a, n * 4),
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
        let bytes = self.shape.logits_bytes() / 16 * 16;
        self.ctx
            .scoped(|| encoder.copy_buffer_to_buffer(&self.logits, 0, &self.grad, 0, bytes))
    }

    /// The roofline through the shader cores: the same bytes copied by a trivial kernel.
    pub fn record_copy_kernel(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let bytes = self.shape.logits_bytes() / 16 * 16;
        baseline::record_copy(&self.ctx, encoder, &self.logits, &self.grad, bytes)
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
    pub fused: Timing,
    pub unfused: Option<Timing>,
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
    /// `prepare`: the O(rows) pre-pass (one workgroup).
    pub prepare: Timing,
    /// The row kernel alone, forward statistics (one read of the logits).
    pub row_stats: Timing,
    /// The loss forward only (prepare, row kernel, reduce).
    pub forward: Timing,
    /// The loss forward + backward, as the main table's "fused".
    pub fused: Timing,
}

/// Times the stages of every shape on `ctx`, side by side.
pub fn run_stages(
    ctx: &Context,
    shapes: &[BenchShape],
    samples: usize,
    budget: Duration,
) -> Result<Vec<StageRow>> {
    let mut rows = Vec::new();
    for &shape in shapes {
        let w = Workload::new(ctx, shape)?;
        rows.push(StageRow {
            adapter: ctx.describe(),
            paths: ctx.paths().describe().to_string(),
            shape,
            prepare: time(ctx, samples, budget, |e| w.record_prepare(e))?,
            row_stats: time(ctx, samples, budget, |e| w.record_row_stats(e))?,
            forward: time(ctx, samples, budget, |e| w.record_forward(e))?,
            fused: time(ctx, samples, budget, |e| w.record_fused(e))?,
        });
    }
    Ok(rows)
}

/// Measures every shape on `ctx`, side by side.
pub fn run(
    ctx: &Context,
    shapes: &[BenchShape],
    samples: usize,
    budget: Duration,
) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for &shape in shapes {
        let w = Workload::new(ctx, shape)?;
        let fused = time(ctx, samples, budget, |e| w.record_fused(e))?;
        let unfused = if w.has_unfused() {
            Some(time(ctx, samples, budget, |e| w.record_unfused(e))?)
        } else {
            None
        };
        let copy_buffer = time(ctx, samples, budget, |e| w.record_copy_buffer(e))?;
        let copy_kernel = time(ctx, samples, budget, |e| w.record_copy_kernel(e))?;
        rows.push(BenchRow {
            adapter: ctx.describe(),
            paths: ctx.paths().describe().to_string(),
            shape,
            fused,
            unfused,
            copy_buffer,
            copy_kernel,
        });
    }
    Ok(rows)
}
