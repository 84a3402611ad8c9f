//! `bench`'s JSON: one row shape for every mode. Every row has `mode`, `adapter`,
//! `paths`, the shape (`rows`, `vocab`, `dtype`; `hidden` too for the head),
//! `gpu_time` and `skipped`; then the mode's own fields. A shape that did not run is a
//! row like the others, its measurements null and `skipped` saying why, so that a
//! script reads the same keys on every row of a mode.

use serde_json::{json, Value};
use wgpu_policy_loss::tools::bench::{BenchRow, BenchShape, FamilyRow, ShardRow, StageRow};
use wgpu_policy_loss::Context;

use super::Outcome;

/// A shape's own keys in a row.
pub(super) trait ShapeJson: Copy + std::fmt::Display {
    fn json(&self) -> Value;
}

impl ShapeJson for BenchShape {
    fn json(&self) -> Value {
        json!({ "rows": self.rows, "vocab": self.vocab, "dtype": self.dtype.name() })
    }
}

/// One row: the keys every mode has, then `fields` (each mode's own, null where the
/// shape did not run). `skipped`: why the row's measurements (or some of them) are
/// missing; null when all ran.
pub(super) fn row(
    ctx: &Context,
    mode: &str,
    shape: &impl ShapeJson,
    gpu_time: Option<bool>,
    skipped: Option<&str>,
    fields: Value,
) -> Value {
    let mut v = json!({
        "mode": mode,
        "adapter": ctx.describe(),
        "paths": ctx.paths().describe(),
        "gpu_time": gpu_time,
        "skipped": skipped,
    });
    if let Some(o) = v.as_object_mut() {
        for more in [shape.json(), fields] {
            if let Value::Object(more) = more {
                o.extend(more);
            }
        }
    }
    v
}

/// The default mode: the fused loss against the unfused baseline and the copies.
pub(super) fn loss(ctx: &Context, o: &Outcome<BenchRow>) -> Vec<Value> {
    let r = o.result.as_ref().ok();
    let ms = |t: fn(&BenchRow) -> f64| r.map(t);
    vec![row(
        ctx,
        "loss",
        &o.shape,
        r.map(|r| r.fused.gpu_time),
        o.why(),
        json!({
            "parts": r.map(|r| r.parts),
            "fused_ms": ms(|r| r.fused.median_ms),
            "fused_gbs": ms(BenchRow::fused_gbs),
            "copy_gbs": ms(BenchRow::copy_gbs),
            "pct_of_copy": ms(BenchRow::pct_of_copy),
            "unfused_ms": r.and_then(|r| r.unfused).map(|u| u.median_ms),
            "unfused_skipped": r.and_then(|r| r.unfused_skipped.as_deref()),
            "speedup": r.and_then(BenchRow::speedup),
            "copy_buffer_ms": ms(|r| r.copy_buffer.median_ms),
            "copy_kernel_ms": ms(|r| r.copy_kernel.median_ms),
            "samples": r.map(|r| r.fused.samples),
        }),
    )]
}

/// `--stages`: the loss's stages alone.
pub(super) fn stages(ctx: &Context, o: &Outcome<StageRow>) -> Vec<Value> {
    let r = o.result.as_ref().ok();
    let ms = |t: fn(&StageRow) -> f64| r.map(t);
    vec![row(
        ctx,
        "stages",
        &o.shape,
        r.map(|r| r.fused.gpu_time),
        o.why(),
        json!({
            "parts": r.map(|r| r.parts),
            "prepare_ms": ms(|r| r.prepare.median_ms),
            "row_kernel_ms": ms(|r| r.row_stats.median_ms),
            "forward_ms": ms(|r| r.forward.median_ms),
            "fused_ms": ms(|r| r.fused.median_ms),
        }),
    )]
}

/// `--vocab-shards K`: sharded against unsharded.
pub(super) fn shards(ctx: &Context, o: &Outcome<ShardRow>) -> Vec<Value> {
    let r = o.result.as_ref().ok();
    vec![row(
        ctx,
        "vocab_shards",
        &o.shape,
        r.map(|r| r.sharded.gpu_time),
        o.why(),
        json!({
            "shards": r.map(|r| &r.shards),
            "unsharded_ms": r.map(|r| r.unsharded.median_ms),
            "sharded_ms": r.map(|r| r.sharded.median_ms),
            "one_rank_ms": r.map(|r| r.one_rank.median_ms),
            "gathered_bytes_per_row": r.map(|r| r.gathered_bytes_per_row),
        }),
    )]
}

/// `--families`: a row per loss family, or one row for a shape that did not run.
pub(super) fn families(ctx: &Context, o: &Outcome<Vec<FamilyRow>>) -> Vec<Value> {
    let one = |f: Option<&FamilyRow>| {
        row(
            ctx,
            "families",
            &o.shape,
            f.map(|f| f.fused.gpu_time),
            o.why(),
            json!({
                "loss": f.map(|f| f.family),
                "launches": f.map(|f| f.launches),
                "fused_ms": f.map(|f| f.fused.median_ms),
            }),
        )
    };
    match &o.result {
        Ok(rows) => rows.iter().map(|f| one(Some(f))).collect(),
        Err(_) => vec![one(None)],
    }
}
