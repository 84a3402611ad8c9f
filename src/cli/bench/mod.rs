//! `bench`: the fused loss against the unfused baseline and the copy roofline, one
//! table per adapter, measured side by side.

mod sampler;

use std::time::Duration;

use clap::Args;
use wgpu_policy_loss::tools::bench::{self, BenchRow, BenchShape, FamilyRow, StageRow};
use wgpu_policy_loss::{Context, Error};

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
    /// Time the loss families instead (ppo_clip, cispo, sapo, gspo, clip_cov, kl_cov, the
    /// top-entropy mask, a rollout correction, and the 2026 matrix's geo_mean, dppo_tv,
    /// dppo_kl, dro, vespo, δ, luspo, the off-policy mask), forward + backward, side by
    /// side.
    #[arg(long)]
    families: bool,
    /// Time the loss with the vocabulary split into K shards on this one device (every
    /// shard's partials, then every shard's loss) against the unsharded loss, and one
    /// rank's share, side by side.
    #[arg(long, value_name = "K")]
    vocab_shards: Option<u32>,
    /// Time the fused linear head (the loss from hidden states and the lm-head weight)
    /// against the unfused path (our matmul to the whole f32 logits, our loss, our
    /// matmuls back), forward + backward, with the extra memory of each and GFLOP/s.
    #[arg(long)]
    head: bool,
    /// The head's shapes instead of the defaults, as ROWSxHIDDENxVOCAB[:DTYPE]
    /// (repeatable), e.g. `--head-shape 4096x896x151936:bf16`.
    #[arg(long = "head-shape", value_parser = parse_head_shape)]
    head_shapes: Vec<bench::HeadBenchShape>,
    /// With --head: the memory columns alone (no allocation, no timing).
    #[arg(long)]
    memory_only: bool,
    /// Time the loss under the sampler's distribution (per-token temperatures, the
    /// logit softcap, both, a given kept set of 50 ids a row) against the plain loss,
    /// forward + backward, side by side.
    #[arg(long)]
    sampler: bool,
}

fn parse_head_shape(s: &str) -> Result<bench::HeadBenchShape, String> {
    let (dims, dtype) = s.split_once(':').unwrap_or((s, "bf16"));
    let num = |v: &str| v.parse::<u32>().map_err(|e| format!("`{v}` in `{s}`: {e}"));
    let d: Vec<&str> = dims.split('x').collect();
    let [t, h, v] = d[..] else {
        return Err(format!("`{s}` is not ROWSxHIDDENxVOCAB[:DTYPE]"));
    };
    let shape = bench::HeadBenchShape {
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

fn print_head(ctx: &Context, rows: &[bench::HeadRow]) {
    let gpu = rows.iter().any(|r| r.fused.is_some_and(|t| t.gpu_time));
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
    for r in rows {
        let ratio = r.unfused_bytes as f64 / r.fused_bytes as f64;
        let ratio_of = |f: Option<bench::Timing>, u: Option<bench::Timing>| match (f, u) {
            (Some(f), Some(u)) => format!("{:.2}x", f.median_ms / u.median_ms),
            _ => "-".to_string(),
        };
        let time = ratio_of(r.fused, r.unfused);
        println!(
            "{:<24} {:>6} {:>10.1} {:>11.1} {:>6.1}x {:>10} {:>11} {:>7} {:>10} {:>7} {:>11} {:>12}",
            r.shape.to_string(),
            r.chunk,
            mb(r.fused_bytes),
            mb(r.unfused_bytes),
            ratio,
            opt(r.fused.map(|t| t.median_ms), 1),
            opt(r.unfused.map(|t| t.median_ms), 1),
            time,
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

fn json_head(r: &bench::HeadRow) -> serde_json::Value {
    let ms = |t: Option<bench::Timing>| t.map(|t| t.median_ms);
    serde_json::json!({
        "kind": "head",
        "adapter": r.adapter,
        "rows": r.shape.rows,
        "hidden": r.shape.hidden,
        "vocab": r.shape.vocab,
        "dtype": r.shape.dtype.to_string(),
        "chunk": r.chunk,
        "fused_bytes": r.fused_bytes,
        "unfused_bytes": r.unfused_bytes,
        "fused_ms": ms(r.fused),
        "unfused_ms": ms(r.unfused),
        "fused_gspo_ms": ms(r.fused_gspo),
        "unfused_gspo_ms": ms(r.unfused_gspo),
        "logits_matmul_ms": ms(r.logits_matmul),
        "matmul_gflops": r.matmul_gflops(),
        "fused_gflops": r.fused_gflops(),
        "skipped": r.skipped,
    })
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
fn clock(gpu_time: bool) -> &'static str {
    if gpu_time {
        "GPU time (timestamps)"
    } else {
        "wall time"
    }
}

/// One shape on one adapter: measured, or why not.
enum Outcome<T> {
    Done(T),
    Skipped(BenchShape, String),
}

/// The table's title line for `ctx`.
fn title(ctx: &Context, clock: &str, extra: &str) {
    println!(
        "\n{}  [{}; {clock}, median{extra}]",
        ctx.describe(),
        ctx.paths().describe()
    );
}

/// A shape that did not run, as a line of its table.
fn print_skipped(shape: &BenchShape, why: &str) {
    println!("{:<20} skipped: {why}", shape.to_string());
}

fn print_table(ctx: &Context, rows: &[Outcome<BenchRow>]) {
    let gpu = rows
        .iter()
        .any(|r| matches!(r, Outcome::Done(r) if r.fused.gpu_time));
    title(ctx, clock(gpu), "");
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
    let mut notes = Vec::new();
    for r in rows {
        let r = match r {
            Outcome::Done(r) => r,
            Outcome::Skipped(shape, why) => {
                print_skipped(shape, why);
                continue;
            }
        };
        let (unfused, speedup) = match (r.unfused, r.speedup()) {
            (Some(u), Some(s)) => (format!("{:.3}", u.median_ms), format!("{s:.2}x")),
            _ => ("-".to_string(), "-".to_string()),
        };
        let shape = match r.parts {
            1 => r.shape.to_string(),
            n => format!("{} /{n}", r.shape),
        };
        println!(
            "{:<20} {:>10.3} {:>9.1} {:>7.1}% {:>12} {:>9} {:>13.3} {:>13.3}",
            shape,
            r.fused.median_ms,
            r.fused_gbs(),
            r.pct_of_copy(),
            unfused,
            speedup,
            r.copy_buffer.median_ms,
            r.copy_kernel.median_ms
        );
        if r.parts > 1 {
            notes.push(format!(
                "{}: logits in {} buffers (larger than the largest), one loss over them",
                r.shape, r.parts
            ));
        }
        if let Some(why) = &r.unfused_skipped {
            notes.push(format!("{}: no unfused baseline: {why}", r.shape));
        }
    }
    for n in notes {
        println!("  {n}");
    }
}

fn print_stages(ctx: &Context, rows: &[Outcome<StageRow>]) {
    let gpu = rows
        .iter()
        .any(|r| matches!(r, Outcome::Done(r) if r.fused.gpu_time));
    title(ctx, clock(gpu), "; one sequence a buffer");
    println!(
        "{:<20} {:>12} {:>14} {:>13} {:>14}",
        "shape", "prepare ms", "row kernel ms", "forward ms", "fwd+bwd ms"
    );
    for r in rows {
        match r {
            Outcome::Done(r) => println!(
                "{:<20} {:>12.4} {:>14.4} {:>13.4} {:>14.4}",
                match r.parts {
                    1 => r.shape.to_string(),
                    n => format!("{} /{n}", r.shape),
                },
                r.prepare.median_ms,
                r.row_stats.median_ms,
                r.forward.median_ms,
                r.fused.median_ms
            ),
            Outcome::Skipped(shape, why) => print_skipped(shape, why),
        }
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
            "parts": r.parts,
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
            "parts": r.parts,
            "fused_ms": r.fused.median_ms,
            "fused_gbs": r.fused_gbs(),
            "copy_gbs": r.copy_gbs(),
            "pct_of_copy": r.pct_of_copy(),
            "unfused_ms": r.unfused.map(|u| u.median_ms),
            "unfused_skipped": r.unfused_skipped,
            "speedup": r.speedup(),
            "copy_buffer_ms": r.copy_buffer.median_ms,
            "copy_kernel_ms": r.copy_kernel.median_ms,
            "samples": r.fused.samples,
        }),
    )
}

fn print_families(ctx: &Context, rows: &[Outcome<Vec<FamilyRow>>]) {
    let gpu = rows
        .iter()
        .any(|r| matches!(r, Outcome::Done(r) if r.iter().any(|f| f.fused.gpu_time)));
    title(ctx, clock(gpu), "; forward + backward, old log-probs given");
    println!(
        "{:<20} {:<20} {:>9} {:>12} {:>12}",
        "shape", "loss", "launches", "fwd+bwd ms", "vs ppo_clip"
    );
    for r in rows {
        match r {
            Outcome::Done(families) => {
                let base = families.first().map_or(f64::NAN, |f| f.fused.median_ms);
                for f in families {
                    println!(
                        "{:<20} {:<20} {:>9} {:>12.3} {:>11.2}x",
                        f.shape.to_string(),
                        f.family,
                        f.launches,
                        f.fused.median_ms,
                        f.fused.median_ms / base
                    );
                }
            }
            Outcome::Skipped(shape, why) => print_skipped(shape, why),
        }
    }
}

fn print_shards(ctx: &Context, rows: &[Outcome<bench::ShardRow>]) {
    let gpu = rows
        .iter()
        .any(|r| matches!(r, Outcome::Done(r) if r.sharded.gpu_time));
    title(
        ctx,
        clock(gpu),
        "; forward + backward, every shard on this device",
    );
    println!(
        "{:<20} {:>7} {:>14} {:>12} {:>8} {:>12} {:>11}",
        "shape", "shards", "unsharded ms", "sharded ms", "ratio", "one rank ms", "bytes/row"
    );
    for r in rows {
        match r {
            Outcome::Done(r) => println!(
                "{:<20} {:>7} {:>14.3} {:>12.3} {:>7.2}x {:>12.3} {:>11}",
                r.shape.to_string(),
                r.shards.len(),
                r.unsharded.median_ms,
                r.sharded.median_ms,
                r.sharded.median_ms / r.unsharded.median_ms,
                r.one_rank.median_ms,
                r.gathered_bytes_per_row
            ),
            Outcome::Skipped(shape, why) => print_skipped(shape, why),
        }
    }
}

fn json_shards(r: &bench::ShardRow) -> serde_json::Value {
    serde_json::json!({
        "adapter": r.adapter,
        "rows": r.shape.rows,
        "vocab": r.shape.vocab,
        "dtype": r.shape.dtype.name(),
        "shards": r.shards,
        "gpu_time": r.sharded.gpu_time,
        "unsharded_ms": r.unsharded.median_ms,
        "sharded_ms": r.sharded.median_ms,
        "one_rank_ms": r.one_rank.median_ms,
        "gathered_bytes_per_row": r.gathered_bytes_per_row,
    })
}

fn json_family(r: &FamilyRow) -> serde_json::Value {
    serde_json::json!({
        "adapter": r.adapter,
        "rows": r.shape.rows,
        "vocab": r.shape.vocab,
        "dtype": r.shape.dtype.name(),
        "loss": r.family,
        "launches": r.launches,
        "gpu_time": r.fused.gpu_time,
        "fused_ms": r.fused.median_ms,
    })
}

/// A shape that did not run, in the JSON: no timings, the reason.
fn json_skipped(ctx: &Context, shape: &BenchShape, why: &str) -> serde_json::Value {
    serde_json::json!({
        "adapter": ctx.describe(),
        "paths": ctx.paths().describe(),
        "rows": shape.rows,
        "vocab": shape.vocab,
        "dtype": shape.dtype.name(),
        "skipped": why,
    })
}

fn json_of<T>(
    ctx: &Context,
    rows: &[Outcome<T>],
    row: impl Fn(&T) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| match r {
            Outcome::Done(r) => row(r),
            Outcome::Skipped(shape, why) => json_skipped(ctx, shape, why),
        })
        .collect()
}

/// Runs `measure` on each shape, turning a shape's error into a skipped row.
fn outcomes<T>(
    shapes: &[BenchShape],
    measure: impl Fn(BenchShape) -> wgpu_policy_loss::Result<T>,
) -> Vec<Outcome<T>> {
    shapes
        .iter()
        .map(|&shape| match measure(shape) {
            Ok(r) => Outcome::Done(r),
            Err(e) => Outcome::Skipped(shape, e.to_string()),
        })
        .collect()
}

/// `bench --head` on one adapter: its table (unless --json) and its JSON rows.
fn run_head(ctx: &Context, args: &BenchArgs, budget: Duration) -> Vec<serde_json::Value> {
    let shapes = match args.head_shapes.is_empty() {
        true => bench::HeadBenchShape::defaults(),
        false => args.head_shapes.clone(),
    };
    let mut rows = Vec::new();
    for s in shapes {
        match bench::measure_head(ctx, s, args.samples, budget, args.memory_only) {
            Ok(r) => rows.push(r),
            Err(e) => eprintln!("bench --head: {s} skipped: {e}"),
        }
    }
    if !args.json {
        print_head(ctx, &rows);
    }
    rows.iter().map(json_head).collect()
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
        if args.head {
            all.extend(run_head(&ctx, args, budget));
        } else if args.sampler {
            all.extend(sampler::run(
                &ctx,
                &shapes,
                (args.samples, budget),
                args.json,
            ));
        } else if let Some(k) = args.vocab_shards {
            let rows = outcomes(&shapes, |s| {
                bench::measure_shards(&ctx, s, k, args.samples, budget)
            });
            if !args.json {
                print_shards(&ctx, &rows);
            }
            for r in &rows {
                match r {
                    Outcome::Done(r) => all.push(json_shards(r)),
                    Outcome::Skipped(shape, why) => all.push(json_skipped(&ctx, shape, why)),
                }
            }
        } else if args.families {
            let rows = outcomes(&shapes, |s| {
                bench::measure_families(&ctx, s, args.samples, budget)
            });
            if !args.json {
                print_families(&ctx, &rows);
            }
            for r in &rows {
                match r {
                    Outcome::Done(rows) => all.extend(rows.iter().map(json_family)),
                    Outcome::Skipped(shape, why) => all.push(json_skipped(&ctx, shape, why)),
                }
            }
        } else if args.stages {
            let rows = outcomes(&shapes, |s| {
                bench::measure_stages(&ctx, s, args.samples, budget)
            });
            if !args.json {
                print_stages(&ctx, &rows);
            }
            all.extend(json_of(&ctx, &rows, json_stages));
        } else {
            let rows = outcomes(&shapes, |s| bench::measure(&ctx, s, args.samples, budget));
            if !args.json {
                print_table(&ctx, &rows);
            }
            all.extend(json_of(&ctx, &rows, json_row));
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
