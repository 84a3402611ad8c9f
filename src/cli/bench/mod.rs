//! `bench`: the fused loss against the unfused baseline and the copy roofline, one
//! table per adapter, measured side by side. Each other mode (`--stages`,
//! `--families`, `--vocab-shards`, `--sampler`, `--head`) times something else in its
//! place; they exclude one another.

mod head;
mod json;
mod sampler;
mod tables;

use std::time::Duration;

use clap::Args;
use serde_json::Value;
use wgpu_policy_loss::tools::bench::{self, BenchShape, HeadBenchShape};
use wgpu_policy_loss::{Context, Error};

use super::progress::Progress;
use super::CliResult;

/// The modes other than `--head`. The head's own flags conflict with them by name: clap
/// waives a requirement (`requires = "head"`) that conflicts with a flag given, so
/// `--stages --memory-only` would otherwise pass with `--memory-only` ignored.
const OTHER_MODES: [&str; 4] = ["stages", "families", "vocab_shards", "sampler"];

#[derive(Args, Debug)]
#[command(group(
    // one table per run: a second mode would silently lose to the first
    clap::ArgGroup::new("mode").args(["stages", "families", "vocab_shards", "head", "sampler"])
))]
pub struct BenchArgs {
    /// Add the long-context shape T = 16384, V = 151936, bf16 (for real GPUs).
    #[arg(long, conflicts_with = "head")]
    large: bool,
    #[arg(long, help = super::ADAPTER_HELP)]
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
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Shapes to run instead of the defaults, as ROWSxVOCAB or ROWSxVOCAB:DTYPE
    /// (repeatable), e.g. `--shape 4096x151936:bf16`.
    #[arg(long = "shape", value_parser = parse_shape, conflicts_with = "head")]
    shapes: Vec<BenchShape>,
    /// Force the portable fallback (no f16 loads, no subgroups) to compare paths.
    #[arg(long)]
    fallback: bool,
    /// No progress on stderr (by default a bar on a terminal, else a line every 5 s).
    #[arg(long)]
    quiet: bool,
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
    /// With --head: its shapes instead of the defaults, as ROWSxHIDDENxVOCAB[:DTYPE]
    /// (repeatable), e.g. `--head-shape 4096x896x151936:bf16`.
    #[arg(
        long = "head-shape",
        value_parser = head::parse_head_shape,
        requires = "head",
        conflicts_with_all = OTHER_MODES
    )]
    head_shapes: Vec<HeadBenchShape>,
    /// With --head: the memory columns alone (no allocation, no timing).
    #[arg(long, requires = "head", conflicts_with_all = OTHER_MODES)]
    memory_only: bool,
    /// Time the loss under the sampler's distribution (per-token temperatures, the
    /// logit softcap, both, a given kept set of 50 ids a row) against the plain loss,
    /// forward + backward, side by side.
    #[arg(long)]
    sampler: bool,
}

/// A finite time budget ≥ 0 (`Duration` panics on anything else).
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a number of seconds ≥ 0")),
        Err(e) => Err(format!("`{s}`: {e}")),
    }
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

/// One shape on one adapter: measured, or why not.
struct Outcome<T, S = BenchShape> {
    shape: S,
    result: Result<T, String>,
}

impl<T, S> Outcome<T, S> {
    /// Why the shape did not run.
    fn why(&self) -> Option<&str> {
        self.result.as_ref().err().map(String::as_str)
    }
}

/// A mode's table of one adapter.
type Table<T, S> = fn(&Context, &[Outcome<T, S>]);
/// A shape's rows in a mode's JSON.
type JsonRows<T, S> = fn(&Context, &Outcome<T, S>) -> Vec<Value>;

/// One mode on one adapter: every shape measured (a shape's error becomes its row),
/// with progress on stderr meanwhile; then its table (unless --json) and its JSON rows.
fn run_mode<S: Copy + std::fmt::Display, T>(
    ctx: &Context,
    args: &BenchArgs,
    shapes: &[S],
    measure: impl Fn(S) -> wgpu_policy_loss::Result<T>,
    (print, json): (Table<T, S>, JsonRows<T, S>),
) -> Vec<Value> {
    let label = format!("bench: {}", ctx.describe());
    let progress = Progress::new(&label, shapes.len() as u64, "shapes", args.quiet);
    let rows: Vec<Outcome<T, S>> = shapes
        .iter()
        .map(|&shape| {
            progress.set_message(format!("measuring {shape}"));
            let result = measure(shape).map_err(|e| e.to_string());
            progress.inc();
            Outcome { shape, result }
        })
        .collect();
    // cleared before the table, so that a terminal shows the two apart
    progress.finish();
    if !args.json {
        print(ctx, &rows);
    }
    rows.iter().flat_map(|o| json(ctx, o)).collect()
}

/// Every shape on one adapter, in the mode the flags chose (clap's `mode` group lets
/// at most one through).
fn run_adapter(ctx: &Context, args: &BenchArgs, shapes: &[BenchShape]) -> Vec<Value> {
    let (n, budget) = (args.samples, Duration::from_secs_f64(args.seconds));
    if args.head {
        let shapes = match args.head_shapes.is_empty() {
            true => HeadBenchShape::defaults(),
            false => args.head_shapes.clone(),
        };
        let measure = |s| bench::measure_head(ctx, s, n, budget, args.memory_only);
        return run_mode(ctx, args, &shapes, measure, (head::print, head::json));
    }
    if args.sampler {
        let measure = |s| bench::measure_sampler(ctx, s, n, budget);
        return run_mode(ctx, args, shapes, measure, (sampler::print, sampler::json));
    }
    if let Some(k) = args.vocab_shards {
        let measure = |s| bench::measure_shards(ctx, s, k, n, budget);
        return run_mode(
            ctx,
            args,
            shapes,
            measure,
            (tables::print_shards, json::shards),
        );
    }
    if args.families {
        let measure = |s| bench::measure_families(ctx, s, n, budget);
        return run_mode(
            ctx,
            args,
            shapes,
            measure,
            (tables::print_families, json::families),
        );
    }
    if args.stages {
        let measure = |s| bench::measure_stages(ctx, s, n, budget);
        return run_mode(
            ctx,
            args,
            shapes,
            measure,
            (tables::print_stages, json::stages),
        );
    }
    let measure = |s| bench::measure(ctx, s, n, budget);
    run_mode(
        ctx,
        args,
        shapes,
        measure,
        (tables::print_table, json::loss),
    )
}

pub fn run(args: &BenchArgs) -> CliResult {
    let shapes = if args.shapes.is_empty() {
        BenchShape::defaults(args.large)
    } else {
        args.shapes.clone()
    };
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
        all.extend(run_adapter(&ctx, args, &shapes));
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
