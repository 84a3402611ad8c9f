//! `bench --sampler`: the table and the JSON rows of the sampler's variants.

use std::time::Duration;

use wgpu_policy_loss::tools::bench::{self, SamplerRow};
use wgpu_policy_loss::Context;

use super::{clock, json_skipped, outcomes, print_skipped, title, Outcome};

/// Every shape on `ctx`: its table (unless `json`) and its JSON rows.
pub(super) fn run(
    ctx: &Context,
    shapes: &[bench::BenchShape],
    (samples, budget): (usize, Duration),
    json: bool,
) -> Vec<serde_json::Value> {
    let rows = outcomes(shapes, |s| bench::measure_sampler(ctx, s, samples, budget));
    if !json {
        print(ctx, &rows);
    }
    let mut all = Vec::new();
    for r in &rows {
        match r {
            Outcome::Done(rows) => all.extend(rows.iter().map(json_row)),
            Outcome::Skipped(shape, why) => all.push(json_skipped(ctx, shape, why)),
        }
    }
    all
}

fn print(ctx: &Context, rows: &[Outcome<Vec<SamplerRow>>]) {
    let gpu = rows
        .iter()
        .any(|r| matches!(r, Outcome::Done(r) if r.iter().any(|f| f.fused.gpu_time)));
    title(
        ctx,
        clock(gpu),
        "; ppo_clip forward + backward, old log-probs given",
    );
    println!(
        "{:<20} {:<36} {:>12} {:>10}",
        "shape", "sampler", "fwd+bwd ms", "vs plain"
    );
    for r in rows {
        match r {
            Outcome::Done(variants) => {
                for v in variants {
                    println!(
                        "{:<20} {:<36} {:>12.3} {:>9.2}x",
                        v.shape.to_string(),
                        v.variant,
                        v.fused.median_ms,
                        v.ratio
                    );
                }
            }
            Outcome::Skipped(shape, why) => print_skipped(shape, why),
        }
    }
}

fn json_row(r: &SamplerRow) -> serde_json::Value {
    serde_json::json!({
        "adapter": r.adapter,
        "rows": r.shape.rows,
        "vocab": r.shape.vocab,
        "dtype": r.shape.dtype.to_string(),
        "sampler": r.variant,
        "fused_ms": r.fused.median_ms,
        "samples": r.fused.samples,
        "gpu_time": r.fused.gpu_time,
        "vs_plain": r.ratio,
    })
}
