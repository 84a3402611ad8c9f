//! `bench --head`: the fused linear head against the unfused path, its table and its
//! JSON rows.

use serde_json::{json, Value};
use wgpu_policy_loss::tools::bench::{HeadBenchShape, HeadRow, Timing};
use wgpu_policy_loss::{Context, Error};

use super::json::{row, ShapeJson};
use super::tables::{any_gpu, clock, print_skipped, title};
use super::Outcome;

impl ShapeJson for HeadBenchShape {
    fn json(&self) -> Value {
        json!({
            "rows": self.rows,
            "hidden": self.hidden,
            "vocab": self.vocab,
            "dtype": self.dtype.name(),
        })
    }
}

pub(super) fn parse_head_shape(s: &str) -> Result<HeadBenchShape, String> {
    let (dims, dtype) = s.split_once(':').unwrap_or((s, "bf16"));
    let num = |v: &str| v.parse::<u32>().map_err(|e| format!("`{v}` in `{s}`: {e}"));
    let d: Vec<&str> = dims.split('x').collect();
    let [t, h, v] = d[..] else {
        return Err(format!("`{s}` is not ROWSxHIDDENxVOCAB[:DTYPE]"));
    };
    let shape = HeadBenchShape {
        rows: num(t)?,
        hidden: num(h)?,
        vocab: num(v)?,
        dtype: dtype.parse().map_err(|e: Error| e.to_string())?,
    };
    if shape.rows == 0 || shape.hidden == 0 || shape.vocab == 0 {
        return Err(format!("`{s}` has an empty dimension"));
    }
    Ok(shape)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub(super) fn print(ctx: &Context, rows: &[Outcome<HeadRow, HeadBenchShape>]) {
    let gpu = any_gpu(rows, |r| r.fused.is_some_and(|t| t.gpu_time));
    title(ctx, clock(gpu), "; forward + backward, both gradients f32");
    println!(
        "{:<24} {:>6} {:>10} {:>11} {:>7} {:>10} {:>11} {:>7} {:>10} {:>7} {:>11} {:>12}",
        "shape",
        "chunk",
        "fused MB",
        "unfused MB",
        "mem",
        "fused ms",
        "unfused ms",
        "time",
        "GSPO ms",
        "time",
        "mm GFLOP/s",
        "head GFLOP/s"
    );
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    let ratio_of = |f: Option<Timing>, u: Option<Timing>| match (f, u) {
        (Some(f), Some(u)) => format!("{:.2}x", f.median_ms / u.median_ms),
        _ => "-".to_string(),
    };
    for o in rows {
        let r = match &o.result {
            Ok(r) => r,
            Err(why) => {
                print_skipped(&o.shape, why, 24);
                continue;
            }
        };
        println!(
            "{:<24} {:>6} {:>10.1} {:>11.1} {:>6.1}x {:>10} {:>11} {:>7} {:>10} {:>7} {:>11} {:>12}",
            r.shape.to_string(),
            r.chunk,
            mb(r.fused_bytes),
            mb(r.unfused_bytes),
            r.unfused_bytes as f64 / r.fused_bytes as f64,
            opt(r.fused.map(|t| t.median_ms), 1),
            opt(r.unfused.map(|t| t.median_ms), 1),
            ratio_of(r.fused, r.unfused),
            opt(r.fused_gspo.map(|t| t.median_ms), 1),
            ratio_of(r.fused_gspo, r.unfused_gspo),
            opt(r.matmul_gflops(), 1),
            opt(r.fused_gflops(), 1),
        );
        if let Some(why) = &r.skipped {
            println!("{:<24} ({why})", "");
        }
    }
    println!(
        "mem: unfused MB / fused MB; time: fused ms / unfused ms, ppo_clip (one pass) and \
         GSPO (statistics first: each chunk's logits made twice where there are several)"
    );
}

/// A head row; `skipped` is why the shape did not run, or, for a shape that did, why
/// some times are missing (`memory only`, or the unfused path's error).
pub(super) fn json(ctx: &Context, o: &Outcome<HeadRow, HeadBenchShape>) -> Vec<Value> {
    let r = o.result.as_ref().ok();
    let ms = |t: fn(&HeadRow) -> Option<Timing>| r.and_then(t).map(|t| t.median_ms);
    let skipped = o.why().or(r.and_then(|r| r.skipped.as_deref()));
    vec![row(
        ctx,
        "head",
        &o.shape,
        r.and_then(|r| r.fused).map(|t| t.gpu_time),
        skipped,
        json!({
            "kind": "head",
            "chunk": r.map(|r| r.chunk),
            "fused_bytes": r.map(|r| r.fused_bytes),
            "unfused_bytes": r.map(|r| r.unfused_bytes),
            "fused_ms": ms(|r| r.fused),
            "unfused_ms": ms(|r| r.unfused),
            "fused_gspo_ms": ms(|r| r.fused_gspo),
            "unfused_gspo_ms": ms(|r| r.unfused_gspo),
            "logits_matmul_ms": ms(|r| r.logits_matmul),
            "matmul_gflops": r.and_then(HeadRow::matmul_gflops),
            "fused_gflops": r.and_then(HeadRow::fused_gflops),
        }),
    )]
}
