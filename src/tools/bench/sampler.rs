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

/// One variant: its name, the softcap, per-row temperatures, a given kept set, and
/// the computed set's top-k and top-p.
struct Variant {
    name: &'static str,
    softcap: Option<f32>,
    temps: bool,
    kept: bool,
    top_k: i32,
    top_p: f32,
}

const fn variant(name: &'static str, softcap: Option<f32>, temps: bool, kept: bool) -> Variant {
    Variant {
        name,
        softcap,
        temps,
        kept,
        top_k: 0,
        top_p: 1.0,
    }
}

const VARIANTS: [Variant; 9] = [
    variant("plain", None, false, false),
    variant("per-token temperatures", None, true, false),
    variant("softcap 30", Some(30.0), false, false),
    variant("softcap 30 + temperatures", Some(30.0), true, false),
    variant("given set, 50 ids", None, false, true),
    variant("given set + softcap + temperatures", Some(30.0), true, true),
    Variant {
        top_k: 50,
        ..variant("top-k 50", None, false, false)
    },
    Variant {
        top_p: 0.9,
        ..variant("top-p 0.9 + temperatures", None, true, false)
    },
    Variant {
        top_k: 50,
        top_p: 0.9,
        ..variant("top-k 50 + top-p 0.9 + softcap", Some(30.0), false, false)
    },
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
    for v in VARIANTS {
        let cfg = LossConfig {
            logit_softcap: v.softcap,
            top_k: v.top_k,
            top_p: v.top_p,
            ..LossConfig::default()
        };
        let loss = PolicyLoss::new(ctx, cfg)?;
        let fused = time(ctx, samples, budget, |e| {
            w.record_loss_with(&loss, (v.temps, v.kept), e)
        })?;
        let plain = rows.first().map_or(fused.median_ms, |r| r.fused.median_ms);
        rows.push(SamplerRow {
            adapter: ctx.describe(),
            shape,
            variant: v.name,
            fused,
            ratio: fused.median_ms / plain,
        });
    }
    Ok(rows)
}
