//! Timing a recorded workload: GPU timestamps where the adapter has them, wall time
//! otherwise; the median over samples.

use std::time::{Duration, Instant};

use crate::context::Context;
use crate::error::Result;

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
