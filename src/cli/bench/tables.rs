//! `bench`'s tables on stdout, one per adapter and mode; a shape that did not run is a
//! line saying why.

use wgpu_policy_loss::tools::bench::{BenchRow, FamilyRow, ShardRow, StageRow};
use wgpu_policy_loss::Context;

use super::Outcome;

/// What a table's times are.
pub(super) fn clock(gpu_time: bool) -> &'static str {
    if gpu_time {
        "GPU time (timestamps)"
    } else {
        "wall time"
    }
}

/// The table's title line for `ctx`.
pub(super) fn title(ctx: &Context, clock: &str, extra: &str) {
    println!(
        "\n{}  [{}; {clock}, median{extra}]",
        ctx.describe(),
        ctx.paths().describe()
    );
}

/// A shape that did not run, as a line of its table.
pub(super) fn print_skipped(shape: &impl std::fmt::Display, why: &str, width: usize) {
    println!("{:<width$} skipped: {why}", shape.to_string());
}

/// Whether any measured row of `rows` has GPU time.
pub(super) fn any_gpu<T, S>(rows: &[Outcome<T, S>], gpu: impl Fn(&T) -> bool) -> bool {
    rows.iter().any(|o| o.result.as_ref().is_ok_and(&gpu))
}

/// `shape`, or `shape /n` where the logits are in `n` buffers.
fn shape_parts(shape: &impl std::fmt::Display, parts: usize) -> String {
    match parts {
        1 => shape.to_string(),
        n => format!("{shape} /{n}"),
    }
}

pub(super) fn print_table(ctx: &Context, rows: &[Outcome<BenchRow>]) {
    title(ctx, clock(any_gpu(rows, |r| r.fused.gpu_time)), "");
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
    for o in rows {
        let r = match &o.result {
            Ok(r) => r,
            Err(why) => {
                print_skipped(&o.shape, why, 20);
                continue;
            }
        };
        let (unfused, speedup) = match (r.unfused, r.speedup()) {
            (Some(u), Some(s)) => (format!("{:.3}", u.median_ms), format!("{s:.2}x")),
            _ => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<20} {:>10.3} {:>9.1} {:>7.1}% {:>12} {:>9} {:>13.3} {:>13.3}",
            shape_parts(&r.shape, r.parts),
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

pub(super) fn print_stages(ctx: &Context, rows: &[Outcome<StageRow>]) {
    let gpu = any_gpu(rows, |r| r.fused.gpu_time);
    title(ctx, clock(gpu), "; one sequence a buffer");
    println!(
        "{:<20} {:>12} {:>14} {:>13} {:>14}",
        "shape", "prepare ms", "row kernel ms", "forward ms", "fwd+bwd ms"
    );
    for o in rows {
        match &o.result {
            Ok(r) => println!(
                "{:<20} {:>12.4} {:>14.4} {:>13.4} {:>14.4}",
                shape_parts(&r.shape, r.parts),
                r.prepare.median_ms,
                r.row_stats.median_ms,
                r.forward.median_ms,
                r.fused.median_ms
            ),
            Err(why) => print_skipped(&o.shape, why, 20),
        }
    }
}

pub(super) fn print_families(ctx: &Context, rows: &[Outcome<Vec<FamilyRow>>]) {
    let gpu = any_gpu(rows, |r| r.iter().any(|f| f.fused.gpu_time));
    title(ctx, clock(gpu), "; forward + backward, old log-probs given");
    println!(
        "{:<20} {:<20} {:>9} {:>12} {:>12}",
        "shape", "loss", "launches", "fwd+bwd ms", "vs ppo_clip"
    );
    for o in rows {
        match &o.result {
            Ok(families) => {
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
            Err(why) => print_skipped(&o.shape, why, 20),
        }
    }
}

pub(super) fn print_shards(ctx: &Context, rows: &[Outcome<ShardRow>]) {
    let gpu = any_gpu(rows, |r| r.sharded.gpu_time);
    let extra = "; forward + backward, every shard on this device";
    title(ctx, clock(gpu), extra);
    println!(
        "{:<20} {:>7} {:>14} {:>12} {:>8} {:>12} {:>11}",
        "shape", "shards", "unsharded ms", "sharded ms", "ratio", "one rank ms", "bytes/row"
    );
    for o in rows {
        match &o.result {
            Ok(r) => println!(
                "{:<20} {:>7} {:>14.3} {:>12.3} {:>7.2}x {:>12.3} {:>11}",
                r.shape.to_string(),
                r.shards.len(),
                r.unsharded.median_ms,
                r.sharded.median_ms,
                r.sharded.median_ms / r.unsharded.median_ms,
                r.one_rank.median_ms,
                r.gathered_bytes_per_row
            ),
            Err(why) => print_skipped(&o.shape, why, 20),
        }
    }
}
