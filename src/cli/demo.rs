//! `demo` (the default): GRPO on "a+b=" entirely on the device (the library's
//! [`Demo`](wgpu_policy_loss::tools::demo::Demo)), with progress on stderr and the reward curve as SVG.

use std::path::PathBuf;

use clap::Args;
use wgpu_policy_loss::tools::demo::{Demo, DemoConfig};
use wgpu_policy_loss::{Context, Error, PolicyLossMode};

use super::progress::Progress;
use super::CliResult;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Training steps (one batch of every prompt × group each).
    #[arg(long, default_value_t = 300)]
    steps: u32,
    /// Answers sampled per prompt (the GRPO group).
    #[arg(long, default_value_t = 16)]
    group_size: u32,
    /// reinforce | ppo_clip | gspo
    #[arg(long, default_value = "ppo_clip")]
    mode: PolicyLossMode,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 0.02)]
    lr: f32,
    /// Entropy bonus γ: keeps sampling answers for prompts whose whole group agrees
    /// (GRPO gives such a group no advantage, so a collapsed wrong answer never recovers).
    #[arg(long, default_value_t = 0.1)]
    entropy_coeff: f32,
    /// Seed of the initial weights and of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Where to write the reward curve (SVG).
    #[arg(long, default_value = "demo_reward.svg")]
    plot: PathBuf,
    #[arg(long, help = super::ADAPTER_HELP)]
    adapter: Option<String>,
    /// No progress on stderr (by default a bar on a terminal, else a line every 5 s).
    #[arg(long)]
    quiet: bool,
}

impl DemoArgs {
    /// Flags that would train nothing are errors naming the flag (the library checks
    /// the others, and [`train`] names their flags).
    fn validate(&self) -> Result<(), String> {
        if self.steps == 0 {
            return Err("--steps: must be at least 1".into());
        }
        Ok(())
    }

    fn config(&self) -> DemoConfig {
        DemoConfig {
            group_size: self.group_size,
            mode: self.mode,
            lr: self.lr,
            entropy_coeff: self.entropy_coeff,
            seed: self.seed,
        }
    }
}

/// The mean reward of every step.
pub fn train(
    ctx: &Context,
    args: &DemoArgs,
    mut on_step: impl FnMut(u32, f32),
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    args.validate()?;
    let mut demo = Demo::new(ctx, &args.config()).map_err(|e| match e {
        // the library names its settings; the CLI names its flags
        Error::InvalidArgument { arg, reason } => {
            format!("--{}: {reason}", arg.replace('_', "-")).into()
        }
        other => Box::<dyn std::error::Error>::from(other),
    })?;
    let mut curve = Vec::with_capacity(args.steps as usize);
    for step in 0..args.steps {
        let mean = demo.step()?;
        curve.push(mean);
        on_step(step, mean);
    }
    Ok(curve)
}

/// The reward curve as SVG, titled with what produced it (the loss mode, the group
/// size, the seed and the adapter), so that a saved plot explains itself.
fn plot(
    path: &std::path::Path,
    curve: &[f32],
    caption: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 16))
        .margin(20)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0..curve.len().max(1), -0.1f32..1.0f32)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("mean reward")
        .draw()?;
    chart.draw_series(LineSeries::new(
        curve.iter().enumerate().map(|(i, &r)| (i, r)),
        &BLUE,
    ))?;
    root.present()?;
    Ok(())
}

/// The plot's title.
fn caption(args: &DemoArgs, adapter: &str) -> String {
    format!(
        "GRPO on a+b=, mean reward: {}, group size {}, seed {}, on {adapter}",
        args.mode.name(),
        args.group_size,
        args.seed
    )
}

pub fn run(args: &DemoArgs) -> CliResult {
    args.validate()?;
    let ctx = super::eval::context(args.adapter.as_deref())?;
    println!(
        "demo: GRPO on \"a+b=\" (a, b < 10, answered in 2 digits), {} answers per prompt, {} steps, {:?}, on {}",
        args.group_size,
        args.steps,
        args.mode,
        ctx.describe()
    );
    let start = std::time::Instant::now();
    let progress = Progress::new("demo:", args.steps as u64, "steps", args.quiet);
    let curve = train(&ctx, args, |_, mean| {
        progress.set_message(format!("mean reward {mean:+.3}"));
        progress.inc();
    })?;
    progress.finish();
    plot(&args.plot, &curve, &caption(args, &ctx.describe()))?;
    let first = curve.first().copied().unwrap_or(0.0);
    let last = curve.last().copied().unwrap_or(0.0);
    println!(
        "mean reward {first:+.3} at step 1 -> {last:+.3} at step {} in {:.1} s; reward curve: {}",
        curve.len(),
        start.elapsed().as_secs_f64(),
        args.plot.display()
    );
    Ok(())
}
