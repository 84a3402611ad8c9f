//! `bench`: the fused loss against the unfused baseline and the copy roofline, one
//! table per adapter, measured side by side.

use std::time::Duration;

use clap::Args;
use wgpu_policy_loss::bench::{self, BenchRow, BenchShape, StageRow, Timing};
use wgpu_policy_loss::Error;

use super::CliResult;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Add the long-context shape T = 16384, V = 151936, bf16 (for real GPUs).
    #[arg(long)]
    large: bool,
    /// Only the adapter whose name contains this (case-insensitive).
    #[arg(long)]
    adapter: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON (what --json prints) to this file, keeping the tables on stdout.
    #[arg(long, value_name = "PATH")]
    json_file: Option<std::path::PathBuf>,
    /// Samples (batches) per measurement; the median is reported.
    #[arg(long, default_value_t = 7)]
    samples: usize,
    /// Time budget per measurement, in seconds (at least 3 samples are taken).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Shapes to run instead of the defaults, as ROWSxVOCAB or ROWSxVOCAB:DTYPE
    /// (repeatable), e.g. `--shape 4096x151936:bf16`.
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<BenchShape>,
    /// Force the portable fallback (no f16 loads, no subgroups) to compare paths.
    #[arg(long)]
    fallback: bool,
    /// Time the loss's stages alone instead: `prepare` (the O(rows) pre-pass), the row
    /// kernel alone, the loss forward only, and forward + backward.
    #[arg(long)]
    stages: bool,
}

fn parse_shape(s: &str) -> Result<BenchShape, String> {
    let (dims, dtype) = s.split_once(':').unwrap_or((s, "f32"));
    let (rows, vocab) = dims
        .split_once('x')
        .ok_or_else(|| format!("`{s}` is not ROWSxVOCAB[:DTYPE]"))?;
    let num = |v: &str| v.parse::<u32>().map_err(|e| format!("`{v}` in `{s}`: {e}"));
    let shape = BenchShape {
        rows: num(rows)?,
        vocab: num(vocab)?,
        dtype: dtype.parse().map_err(|e: Error| e.to_string())?,
    };
    if shape.rows == 0 || shape.vocab == 0 {
        return Err(format!("`{s}` has an empty dimension"));
    }
    Ok(shape)
}

/// What a table's times are.
fn clock(t: &Timing) -> &'static str {
    if t.gpu_time {
        "GPU time (timestamps)"
    } else {
        "wall time"
    }
}

fn print_table(rows: &[BenchRow]) {
    let Some(first) = rows.first() else { return };
    let clock = clock(&first.fused);
    println!("\n{}  [{}; {clock}, median]", first.adapter, first.paths);
    println!(
        "{:<20} {:>10} {:>9} {:>8} {:>12} {:>9} {:>13} {:>13}",
        "shape",
        "fused ms",
        "GB/s",
        "% copy",
        "unfused ms",
        "speed-up",
        "copy buf ms",
        "copy krn ms"
    );
    for r in rows {
        let (unfused, speedup) = match (r.unfused, r.speedup()) {
            (Some(u), Some(s)) => (format!("{:.3}", u.median_ms), format!("{s:.2}x")),
            _ => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<20} {:>10.3} {:>9.1} {:>7.1}% {:>12} {:>9} {:>13.3} {:>13.3}",
            r.shape.to_string(),
            r.fused.median_ms,
            r.fused_gbs(),
            r.pct_of_copy(),
            unfused,
            speedup,
            r.copy_buffer.median_ms,
            r.copy_kernel.median_ms
        );
    }
}

fn print_stages(rows: &[StageRow]) {
    let Some(first) = rows.first() else { return };
    let clock = clock(&first.fused);
    println!(
        "\n{}  [{}; {clock}, median; one sequence of every row]",
        first.adapter, first.paths
    );
    println!(
        "{:<20} {:>12} {:>14} {:>13} {:>14}",
        "shape", "prepare ms", "row kernel ms", "forward ms", "fwd+bwd ms"
    );
    for r in rows {
        println!(
            "{:<20} {:>12.4} {:>14.4} {:>13.4} {:>14.4}",
            r.shape.to_string(),
            r.prepare.median_ms,
            r.row_stats.median_ms,
            r.forward.median_ms,
            r.fused.median_ms
        );
    }
}

/// The fields every JSON row has, then `fields`.
fn json_object(
    adapter: &str,
    paths: &str,
    shape: &BenchShape,
    gpu_time: bool,
    fields: serde_json::Value,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "adapter": adapter,
        "paths": paths,
        "rows": shape.rows,
        "vocab": shape.vocab,
        "dtype": shape.dtype.name(),
        "gpu_time": gpu_time,
    });
    if let (Some(o), serde_json::Value::Object(more)) = (v.as_object_mut(), fields) {
        o.extend(more);
    }
    v
}

fn json_stages(r: &StageRow) -> serde_json::Value {
    json_object(
        &r.adapter,
        &r.paths,
        &r.shape,
        r.fused.gpu_time,
        serde_json::json!({
            "prepare_ms": r.prepare.median_ms,
            "row_kernel_ms": r.row_stats.median_ms,
            "forward_ms": r.forward.median_ms,
            "fused_ms": r.fused.median_ms,
        }),
    )
}

fn json_row(r: &BenchRow) -> serde_json::Value {
    json_object(
        &r.adapter,
        &r.paths,
        &r.shape,
        r.fused.gpu_time,
        serde_json::json!({
            "fused_ms": r.fused.median_ms,
            "fused_gbs": r.fused_gbs(),
            "copy_gbs": r.copy_gbs(),
            "pct_of_copy": r.pct_of_copy(),
            "unfused_ms": r.unfused.map(|u| u.median_ms),
            "speedup": r.speedup(),
            "copy_buffer_ms": r.copy_buffer.median_ms,
            "copy_kernel_ms": r.copy_kernel.median_ms,
            "samples": r.fused.samples,
        }),
    )
}

pub fn run(args: &BenchArgs) -> CliResult {
    let shapes = if args.shapes.is_empty() {
        BenchShape::defaults(args.large)
    } else {
        args.shapes.clone()
    };
    let budget = Duration::from_secs_f64(args.seconds);
    let mut all = Vec::new();
    let open = super::open_adapters(args.adapter.as_deref())?;
    // on stderr, so that --json stays one JSON document
    for u in &open.unavailable {
        eprintln!("bench: skipped {u}");
    }
    for ctx in open.contexts {
        let ctx = if args.fallback {
            ctx.with_paths(wgpu_policy_loss::Paths::FALLBACK)
        } else {
            ctx
        };
        let limits = ctx.device().limits();
        let fits: Vec<BenchShape> = shapes
            .iter()
            .copied()
            .filter(|s| s.logits_bytes() <= limits.max_buffer_size)
            .collect();
        if args.stages {
            let rows = bench::run_stages(&ctx, &fits, args.samples, budget)?;
            if !args.json {
                print_stages(&rows);
            }
            all.extend(rows.iter().map(json_stages));
        } else {
            let rows = bench::run(&ctx, &fits, args.samples, budget)?;
            if !args.json {
                print_table(&rows);
            }
            all.extend(rows.iter().map(json_row));
        }
        for s in shapes.iter().filter(|s| !fits.contains(s)) {
            // on stderr with --json, so that stdout stays one JSON document
            let line = format!(
                "{s}: skipped on {}, {} bytes of logits exceed its largest buffer ({} bytes)",
                ctx.describe(),
                s.logits_bytes(),
                limits.max_buffer_size
            );
            if args.json {
                eprintln!("bench: {line}");
            } else {
                println!("{line}");
            }
        }
    }
    let json = serde_json::to_string_pretty(&all)?;
    if let Some(path) = &args.json_file {
        std::fs::write(path, &json).map_err(|e| format!("--json-file {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    }
    Ok(())
}
