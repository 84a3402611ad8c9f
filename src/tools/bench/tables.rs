//! The benchmark tables: the main one (fused, unfused, copies), the stages of the
//! fused loss, the loss families, and the vocabulary split over shards.

use std::time::Duration;

use super::{time, BenchShape, Timing, Workload};
use crate::context::Context;
use crate::error::Result;
use crate::{LossConfig, PolicyLoss, VocabShards};

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
        // the modes of 2026 (docs/MATH.md#policy-modes-of-2026)
        ("geo_mean", mode(M::GeoMean)),
        ("dppo_tv", mode(M::DppoTv)),
        ("dppo_kl", mode(M::DppoKl)),
        (
            "dro",
            LossConfig {
                dro_beta: Some(0.1),
                ..mode(M::Dro)
            },
        ),
        ("vespo", mode(M::Vespo)),
        (
            "ppo_clip delta 2",
            LossConfig {
                delta: Some(2.0),
                ..base
            },
        ),
        (
            "luspo",
            base.with_loss_type(crate::TrlLossType::Luspo, None)
                .expect("luspo needs no length"),
        ),
        (
            "off-policy mask 0.5",
            LossConfig {
                off_policy_mask_threshold: Some(0.5),
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
