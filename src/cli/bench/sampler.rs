//! `bench --sampler`: the table and the JSON rows of the sampler's variants.

use serde_json::{json, Value};
use wgpu_policy_loss::tools::bench::SamplerRow;
use wgpu_policy_loss::Context;

use super::json::row;
use super::tables::{any_gpu, clock, print_skipped, title};
use super::Outcome;

pub(super) fn print(ctx: &Context, rows: &[Outcome<Vec<SamplerRow>>]) {
    let gpu = any_gpu(rows, |r| r.iter().any(|f| f.fused.gpu_time));
    let extra = "; ppo_clip forward + backward, old log-probs given";
    title(ctx, clock(gpu), extra);
    println!(
        "{:<20} {:<36} {:>12} {:>10}",
        "shape", "sampler", "fwd+bwd ms", "vs plain"
    );
    for o in rows {
        match &o.result {
            Ok(variants) => {
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
            Err(why) => print_skipped(&o.shape, why, 20),
        }
    }
}

/// A row per variant, or one row for a shape that did not run.
pub(super) fn json(ctx: &Context, o: &Outcome<Vec<SamplerRow>>) -> Vec<Value> {
    let one = |v: Option<&SamplerRow>| {
        row(
            ctx,
            "sampler",
            &o.shape,
            v.map(|v| v.fused.gpu_time),
            o.why(),
            json!({
                "sampler": v.map(|v| v.variant),
                "fused_ms": v.map(|v| v.fused.median_ms),
                "samples": v.map(|v| v.fused.samples),
                "vs_plain": v.map(|v| v.ratio),
            }),
        )
    };
    match &o.result {
        Ok(variants) => variants.iter().map(|v| one(Some(v))).collect(),
        Err(_) => vec![one(None)],
    }
}
