//! `demo` (the default): reinforcement learning entirely on the device, the seed's
//! scenario generalised. A tiny policy (`shaders/demo/policy.wgsl`: embeddings of the
//! prompt "a+b=", of the answer position and of the previous digit, and an MLP head
//! over the digits) samples two-digit answers digit by digit; each right answer earns
//! +1.0 and each wrong one -0.1, GRPO turns the rewards of a group of answers to one
//! prompt into advantages, and this library's loss gives the gradient of the logits;
//! the policy backpropagates it and takes an Adam step.

use std::path::PathBuf;

use clap::Args;
use wgpu_policy_loss::wgpu;
use wgpu_policy_loss::{
    AdvantageEstimator, Advantages, Context, DType, F32View, GradView, Gradient, LogitsView,
    LossAggMode, LossBuffers, LossConfig, LossInputs, PolicyLoss, PolicyLossMode, TargetsView,
};

use super::CliResult;

/// Operands range over 0..A; answers are L digits (leading zeros included), V digits.
const A: u32 = 10;
const L: u32 = 2;
const H: u32 = 64;
const V: u32 = 10;
const PARAMS: u32 = (2 * A + L + 2 * V + 1) * H + V;

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
    /// Run on the first adapter whose "name (Backend)" contains this.
    #[arg(long)]
    adapter: Option<String>,
    /// No progress bar (for logs and tests).
    #[arg(long)]
    quiet: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    answers: u32,
    step: u32,
    seed: u32,
    pos: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

impl DemoArgs {
    /// Flags that would train nothing, or something other than asked, are errors
    /// naming the flag.
    fn validate(&self) -> Result<(), String> {
        if self.steps == 0 {
            return Err("--steps: must be at least 1".into());
        }
        if self.group_size < 2 {
            return Err(format!(
                "--group-size: must be at least 2 (GRPO compares answers within a group), got {}",
                self.group_size
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("--lr: must be finite and > 0, got {}", self.lr));
        }
        if !(self.entropy_coeff.is_finite() && self.entropy_coeff >= 0.0) {
            return Err(format!(
                "--entropy-coeff: must be finite and >= 0, got {}",
                self.entropy_coeff
            ));
        }
        Ok(())
    }
}

/// The mean reward of every step.
pub fn train(
    ctx: &Context,
    args: &DemoArgs,
    mut on_step: impl FnMut(u32, f32),
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    args.validate()?;
    let device = ctx.device();
    let g = args.group_size;
    let prompts: Vec<[u32; 2]> = (0..A * A)
        .flat_map(|p| std::iter::repeat_n([p / A, p % A], g as usize))
        .collect();
    let answers = prompts.len() as u32;
    let rows = answers * L;
    // the backward pass walks every row (and its V logits) in one lane: past the loop
    // cap of Mesa's CPU drivers it would train on partial gradients, silently
    if let Some(limit) = ctx.loop_limit() {
        let steps = rows as u64 * (V as u64 + 1);
        if steps > limit {
            let most = limit / ((A * A * L) as u64 * (V as u64 + 1));
            return Err(format!(
                "--group-size: {g} answers per prompt make the demo's backward pass loop {steps} \
                 times in one lane, and {} stops a shader's loops after {limit}; use at most \
                 {most} there",
                ctx.describe()
            )
            .into());
        }
    }
    // small deterministic initial weights
    let mut state = args.seed.wrapping_mul(2654435761).wrapping_add(12345);
    let theta: Vec<f32> = (0..PARAMS)
        .map(|_| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            ((state >> 8) as f32 / 16777216.0 - 0.5) * 0.2
        })
        .collect();
    let zeros = |n: u32| vec![0u8; n as usize * 4];
    let prompts_buf = ctx.upload("demo prompts", bytemuck::cast_slice(&prompts));
    let theta_buf = ctx.upload("demo theta", bytemuck::cast_slice(&theta));
    let hidden = ctx.upload("demo hidden", &zeros(rows * H));
    let logits = ctx.upload("demo logits", &zeros(rows * V));
    let tokens = ctx.upload("demo tokens", &zeros(rows));
    let rewards = ctx.upload("demo rewards", &zeros(answers));
    let grad = ctx.upload("demo grad", &zeros(rows * V));
    let moments = ctx.upload("demo moments", &zeros(PARAMS * 4));
    let advantages = ctx.upload("demo advantages", &zeros(answers));
    let mask = ctx.upload(
        "demo mask",
        bytemuck::cast_slice(&vec![1.0f32; rows as usize]),
    );
    // one parameter block per answer position (the positions run in one submission)
    let uniform = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
    let params: Vec<wgpu::Buffer> = (0..L)
        .map(|_| ctx.buffer("demo params", 32, uniform))
        .collect();
    let readback = ctx.buffer(
        "demo readback",
        answers as u64 * 4,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    );

    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("demo policy"),
        source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/demo/policy.wgsl").into()),
    });
    let constants = [
        ("H", H as f64),
        ("V", V as f64),
        ("A", A as f64),
        ("L", L as f64),
    ];
    let pipeline = |entry: &str| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: true,
            },
            cache: None,
        })
    };
    let buffers: [(u32, &wgpu::Buffer); 8] = [
        (1, &prompts_buf),
        (2, &theta_buf),
        (3, &hidden),
        (4, &logits),
        (5, &tokens),
        (6, &rewards),
        (7, &grad),
        (8, &moments),
    ];
    // each entry point binds only what it uses (auto layouts drop the rest)
    let stage = |entry: &str, pos: u32, used: &[u32], groups: u32| {
        let p = pipeline(entry);
        let mut entries: Vec<wgpu::BindGroupEntry<'_>> = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params[pos as usize].as_entire_binding(),
        }];
        entries.extend(
            buffers
                .iter()
                .filter(|(b, _)| used.contains(b))
                .map(|(b, buf)| wgpu::BindGroupEntry {
                    binding: *b,
                    resource: buf.as_entire_binding(),
                }),
        );
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &p.get_bind_group_layout(0),
            entries: &entries,
        });
        (p, bg, groups)
    };
    // sampling runs position by position: a digit is drawn given the ones before it
    let sampling: Vec<_> = (0..L)
        .flat_map(|pos| {
            [
                stage("forward", pos, &[1, 2, 3, 4, 5], answers.div_ceil(64)),
                stage("sample", pos, &[1, 4, 5, 6], answers.div_ceil(64)),
            ]
        })
        .collect();
    let update = [
        stage("backward", 0, &[1, 2, 3, 5, 7, 8], PARAMS.div_ceil(64)),
        stage("adam", 0, &[2, 8], PARAMS.div_ceil(64)),
    ];
    let loss = PolicyLoss::new(
        ctx,
        LossConfig {
            mode: args.mode,
            entropy_coeff: args.entropy_coeff,
            loss_agg_mode: LossAggMode::SeqMeanTokenMean,
            ..LossConfig::default()
        },
    )?;
    let out = LossBuffers::new(ctx, rows);
    // one sequence of L rows per answer, one advantage per answer
    let logits_view =
        LogitsView::new(&logits, DType::F32, rows, V).with_sequences(L, (L * V) as u64);
    let inputs = LossInputs::new(
        logits_view,
        TargetsView::new(&tokens),
        F32View::new(&mask),
        Advantages::PerSequence(F32View::new(&advantages)),
    );
    let run = |encoder: &mut wgpu::CommandEncoder,
               list: &[(wgpu::ComputePipeline, wgpu::BindGroup, u32)]| {
        for (p, bg, groups) in list {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(p);
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(*groups, 1, 1);
        }
    };

    let mut curve = Vec::with_capacity(args.steps as usize);
    for step in 0..args.steps {
        for pos in 0..L {
            let p = Params {
                answers,
                step,
                seed: args.seed,
                pos,
                lr: args.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            };
            ctx.queue()
                .write_buffer(&params[pos as usize], 0, bytemuck::bytes_of(&p));
        }
        let mut encoder = device.create_command_encoder(&Default::default());
        run(&mut encoder, &sampling);
        ctx.record_advantages(
            &mut encoder,
            AdvantageEstimator::Grpo,
            &F32View::new(&rewards),
            answers,
            g,
            &F32View::new(&advantages),
        )?;
        loss.record(
            &mut encoder,
            &inputs,
            Gradient::Into(GradView::new(&grad, DType::F32, V)),
            &out.outputs(),
        )?;
        run(&mut encoder, &update);
        encoder.copy_buffer_to_buffer(&rewards, 0, &readback, 0, answers as u64 * 4);
        ctx.submit_and_wait(encoder)?;
        let (tx, rx) = std::sync::mpsc::channel();
        readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        device.poll(wgpu::PollType::wait_indefinitely())?;
        rx.recv()??;
        let r: Vec<f32> = bytemuck::pod_collect_to_vec(&readback.get_mapped_range(..)?);
        readback.unmap();
        let mean = r.iter().sum::<f32>() / r.len() as f32;
        curve.push(mean);
        on_step(step, mean);
    }
    Ok(curve)
}

fn plot(path: &std::path::Path, curve: &[f32]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
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

pub fn run(args: &DemoArgs) -> CliResult {
    args.validate()?;
    let ctx = super::eval::context(args.adapter.as_deref())?;
    println!(
        "demo: GRPO on \"a+b=\" (a, b < {A}, answered in {L} digits), {} answers per prompt, {} steps, {:?}, on {}",
        args.group_size,
        args.steps,
        args.mode,
        ctx.describe()
    );
    let start = std::time::Instant::now();
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.steps as u64)
    };
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} {msg}",
    )?);
    let curve = train(&ctx, args, |_, mean| {
        bar.set_message(format!("mean reward {mean:+.3}"));
        bar.inc(1);
    })?;
    bar.finish();
    plot(&args.plot, &curve)?;
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
