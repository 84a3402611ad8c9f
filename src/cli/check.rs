//! `check`: the cross-vendor correctness check a user runs on their own machine. Every
//! adapter, on its native paths and on the portable fallback, every logits dtype and
//! loss mode, several shapes, against the f64 CPU reference (the library's
//! [`check`](wgpu_policy_loss::tools::check) cases); one table of max errors per adapter and
//! path, and a non-zero exit on any failure.

use clap::Args;
use wgpu_policy_loss::tools::check::{self, Worst};
use wgpu_policy_loss::{DType, Paths};

use super::CliResult;

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[arg(long, help = super::ADAPTER_HELP)]
    adapter: Option<String>,
}

pub fn run(args: &CheckArgs) -> CliResult {
    let open = super::open_adapters(args.adapter.as_deref())?;
    println!(
        "{:<46} {:<14} {:<5} {:>6} {:>10} {:>10} {:>12}  status",
        "adapter", "path", "dtype", "cases", "loss", "log-prob", "grad/bound"
    );
    for u in &open.unavailable {
        println!(
            "{:<46} {:<14} {:<5} {:>6} {:>10} {:>10} {:>12}  unavailable: {}",
            u.adapter, "-", "-", 0, "-", "-", "-", u.reason
        );
    }
    let contexts = open.contexts;
    let mut failed = 0;
    let contexts_run = contexts.len();
    for native in contexts {
        let mut variants = vec![native.clone()];
        if native.paths() != Paths::FALLBACK {
            variants.push(native.with_paths(Paths::FALLBACK));
        }
        for ctx in variants {
            for dtype in DType::ALL {
                let mut worst = Worst::default();
                for case in check::cases(dtype) {
                    // an error on one adapter (a lost device, say) fails its rows, and
                    // the other adapters are still checked
                    let why = match check::run_case(&ctx, &case, &mut worst) {
                        Ok(why) => why,
                        Err(e) => {
                            worst.cases += 1;
                            worst.failed += 1;
                            Some(format!("{case:?}: {e}"))
                        }
                    };
                    if let Some(why) = why {
                        eprintln!("FAIL {} [{}] {why}", ctx.describe(), ctx.paths().describe());
                    }
                }
                failed += worst.failed;
                println!(
                    "{:<46} {:<14} {:<5} {:>6} {:>10.1e} {:>10.1e} {:>12.1e}  {}",
                    ctx.describe(),
                    ctx.paths().describe(),
                    dtype.name(),
                    worst.cases,
                    worst.loss,
                    worst.logp,
                    worst.grad,
                    if worst.failed == 0 {
                        "ok".to_string()
                    } else {
                        format!("FAILED {}", worst.failed)
                    }
                );
            }
        }
    }
    println!("tolerances: {}", check::tolerances());
    if failed > 0 {
        return Err(format!("{failed} checks failed").into());
    }
    if open.unavailable.is_empty() {
        println!("all checks passed");
    } else {
        println!(
            "all checks passed on the {} adapter(s) that opened a device; skipped {} that \
             could not (listed above; {}=1 makes that an error)",
            contexts_run,
            open.unavailable.len(),
            wgpu_policy_loss::STRICT_ENV
        );
    }
    Ok(())
}
