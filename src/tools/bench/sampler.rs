//! `bench --sampler`: the loss under the sampler's distribution against the plain loss,
//! side by side in one run (ppo_clip, forward + backward, old log-probs given).

use std::time::Duration;

use super::{time, BenchShape, Timing, Workload};
use crate::context::Context;
use crate::error::Result;
use crate::{LossConfig, PolicyLoss};

/// One variant of the sampler's options timed on one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerRow {
    pub adapter: String,
    pub shape: BenchShape,
    pub variant: &'static str,
    pub fused: Timing,
    /// This variant's median over the plain loss's, measured in the same run.
    pub ratio: f64,
}

/// The variants: (name, the softcap, per-row temperatures, a given kept set).
const VARIANTS: [(&str, Option<f32>, bool, bool); 6] = [
    ("plain", None, false, false),
    ("per-token temperatures", None, true, false),
    ("softcap 30", Some(30.0), false, false),
    ("softcap 30 + temperatures", Some(30.0), true, false),
    ("given set, 50 ids", None, false, true),
    ("given set + softcap + temperatures", Some(30.0), true, true),
];

/// Times every variant on one shape, the plain loss first.
pub fn measure_sampler(
    ctx: &Context,
    shape: BenchShape,
    samples: usize,
    budget: Duration,
) -> Result<Vec<SamplerRow>> {
    let w = Workload::new(ctx, shape)?;
    let mut rows: Vec<SamplerRow> = Vec::new();
    for (variant, softcap, temps, kept) in VARIANTS {
        let cfg = LossConfig {
            logit_softcap: softcap,
            ..LossConfig::default()
        };
        let loss = PolicyLoss::new(ctx, cfg)?;
        let fused = time(ctx, samples, budget, |e| {
            w.record_loss_with(&loss, (temps, kept), e)
        })?;
        let plain = rows.first().map_or(fused.median_ms, |r| r.fused.median_ms);
        rows.push(SamplerRow {
            adapter: ctx.describe(),
            shape,
            variant,
            fused,
            ratio: fused.median_ms / plain,
        });
    }
    Ok(rows)
}
