//! The demo's training loop: reinforcement learning entirely on the device, the seed's
//! scenario generalised. A tiny policy (`shaders/demo/policy.wgsl`: embeddings of the
//! prompt "a+b=", of the answer position and of the previous digit, and an MLP head
//! over the digits) samples two-digit answers digit by digit; each right answer earns
//! +1.0 and each wrong one -0.1, GRPO turns the rewards of a group of answers to one
//! prompt into advantages, and this library's loss gives the gradient of the logits;
//! the policy backpropagates it and takes an Adam step. The CLI's `demo` and the web
//! page (`web/`) run it; [`Demo::step_async`] is the browser's form of a step.

use crate::{
    AdvantageEstimator, Advantages, Context, DType, Error, F32View, GradView, Gradient, LogitsView,
    LossAggMode, LossBuffers, LossConfig, LossInputs, PolicyLoss, PolicyLossMode, Result,
    TargetsView,
};

/// Operands range over 0..A; answers are L digits (leading zeros included), V digits.
const A: u32 = 10;
const L: u32 = 2;
const H: u32 = 64;
const V: u32 = 10;
const PARAMS: u32 = (2 * A + L + 2 * V + 1) * H + V;

/// The demo's settings (the CLI's flags).
#[derive(Clone, Copy, Debug)]
pub struct DemoConfig {
    /// Answers sampled per prompt (the GRPO group), at least 2.
    pub group_size: u32,
    /// The loss mode.
    pub mode: PolicyLossMode,
    /// Adam's learning rate.
    pub lr: f32,
    /// Entropy bonus γ: keeps sampling answers for prompts whose whole group agrees
    /// (GRPO gives such a group no advantage, so a collapsed wrong answer never recovers).
    pub entropy_coeff: f32,
    /// Seed of the initial weights and of the sampling.
    pub seed: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            group_size: 16,
            mode: PolicyLossMode::PpoClip,
            lr: 0.02,
            entropy_coeff: 0.1,
            seed: 0,
        }
    }
}

crate::shader::abi::wgsl_struct! {
    /// The policy shader's uniform block: its WGSL opens the module.
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct Params {
        answers: u32,
        step: u32,
        seed: u32,
        /// the answer position this launch computes
        pos: u32,
        /// Adam's
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    }
}

/// One compute pass: a pipeline, its bind group, its workgroups.
type Stage = (wgpu::ComputePipeline, wgpu::BindGroup, u32);

/// The demo's policy, optimiser state and loss on one device.
pub struct Demo {
    ctx: Context,
    config: DemoConfig,
    step: u32,
    answers: u32,
    logits: wgpu::Buffer,
    tokens: wgpu::Buffer,
    rewards: wgpu::Buffer,
    grad: wgpu::Buffer,
    advantages: wgpu::Buffer,
    mask: wgpu::Buffer,
    params: Vec<wgpu::Buffer>,
    sampling: Vec<Stage>,
    update: Vec<Stage>,
    loss: PolicyLoss,
    out: LossBuffers,
}

/// `Err` naming the setting that would train nothing, or something other than asked,
/// for `answers` answers.
fn check_config(ctx: &Context, cfg: &DemoConfig, answers: u32) -> Result<()> {
    let g = cfg.group_size;
    if g < 2 {
        return Err(Error::arg(
            "group_size",
            format!("must be at least 2 (GRPO compares answers within a group), got {g}"),
        ));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(Error::arg(
            "lr",
            format!("must be finite and > 0, got {}", cfg.lr),
        ));
    }
    if !(cfg.entropy_coeff.is_finite() && cfg.entropy_coeff >= 0.0) {
        return Err(Error::arg(
            "entropy_coeff",
            format!("must be finite and >= 0, got {}", cfg.entropy_coeff),
        ));
    }
    // the backward pass walks every row (and its V logits) in one lane: past the loop
    // cap of Mesa's CPU drivers it would train on partial gradients, silently
    if let Some(limit) = ctx.loop_limit() {
        let steps = (answers * L) as u64 * (V as u64 + 1);
        if steps > limit {
            let most = limit / ((A * A * L) as u64 * (V as u64 + 1));
            return Err(Error::arg(
                "group_size",
                format!(
                    "{g} answers per prompt make the demo's backward pass loop {steps} \
                     times in one lane, and {} stops a shader's loops after {limit}; use \
                     at most {most} there",
                    ctx.describe()
                ),
            ));
        }
    }
    Ok(())
}

/// Small deterministic initial weights.
fn initial_theta(seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..PARAMS)
        .map(|_| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            ((state >> 8) as f32 / 16777216.0 - 0.5) * 0.2
        })
        .collect()
}

/// The policy shader's entry points, bound to the demo's buffers: binding 0 is a
/// position's parameter block, 1.. the buffers of `buffers`.
struct Stages<'a> {
    ctx: &'a Context,
    module: wgpu::ShaderModule,
    params: &'a [wgpu::Buffer],
    buffers: [(u32, &'a wgpu::Buffer); 8],
}

impl Stages<'_> {
    fn new<'a>(
        ctx: &'a Context,
        params: &'a [wgpu::Buffer],
        buffers: [(u32, &'a wgpu::Buffer); 8],
    ) -> Stages<'a> {
        let module = ctx
            .device()
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("demo policy"),
                source: wgpu::ShaderSource::Wgsl(
                    (crate::shader::abi::wgsl(&[&[Params::DECL]])
                        + include_str!("../../shaders/demo/policy.wgsl"))
                    .into(),
                ),
            });
        Stages {
            ctx,
            module,
            params,
            buffers,
        }
    }

    /// `entry` at position `pos`, binding only the buffers it uses (auto layouts drop
    /// the rest).
    fn stage(&self, entry: &str, pos: u32, used: &[u32], groups: u32) -> Stage {
        let device = self.ctx.device();
        let constants = [
            ("H", H as f64),
            ("V", V as f64),
            ("A", A as f64),
            ("L", L as f64),
        ];
        let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &self.module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: true,
            },
            cache: None,
        });
        let mut entries: Vec<wgpu::BindGroupEntry<'_>> = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: self.params[pos as usize].as_entire_binding(),
        }];
        entries.extend(
            self.buffers
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
    }

    /// Sampling, position by position (a digit is drawn given the ones before it), and
    /// the update: the policy's backward and Adam's step.
    fn all(&self, answers: u32) -> (Vec<Stage>, Vec<Stage>) {
        let per_answer = answers.div_ceil(64);
        let sampling = (0..L)
            .flat_map(|pos| {
                [
                    self.stage("forward", pos, &[1, 2, 3, 4, 5], per_answer),
                    self.stage("sample", pos, &[1, 4, 5, 6], per_answer),
                ]
            })
            .collect();
        let update = vec![
            self.stage("backward", 0, &[1, 2, 3, 5, 7, 8], PARAMS.div_ceil(64)),
            self.stage("adam", 0, &[2, 8], PARAMS.div_ceil(64)),
        ];
        (sampling, update)
    }
}

impl Demo {
    /// Builds the policy (small deterministic initial weights) and its pipelines.
    /// `Err` naming the setting that would train nothing, or something other than
    /// asked.
    pub fn new(ctx: &Context, config: &DemoConfig) -> Result<Self> {
        let cfg = *config;
        let prompts: Vec<[u32; 2]> = (0..A * A)
            .flat_map(|p| std::iter::repeat_n([p / A, p % A], cfg.group_size as usize))
            .collect();
        let answers = prompts.len() as u32;
        check_config(ctx, &cfg, answers)?;
        let rows = answers * L;
        let zeros = |n: u32| vec![0u8; n as usize * 4];
        let prompts_buf = ctx.upload("demo prompts", bytemuck::cast_slice(&prompts));
        let theta_buf = ctx.upload("demo theta", bytemuck::cast_slice(&initial_theta(cfg.seed)));
        let hidden = ctx.upload("demo hidden", &zeros(rows * H));
        let logits = ctx.upload("demo logits", &zeros(rows * V));
        let tokens = ctx.upload("demo tokens", &zeros(rows));
        let rewards = ctx.upload("demo rewards", &zeros(answers));
        let grad = ctx.upload("demo grad", &zeros(rows * V));
        let moments = ctx.upload("demo moments", &zeros(PARAMS * 4));
        let advantages = ctx.upload("demo advantages", &zeros(answers));
        let ones = vec![1.0f32; rows as usize];
        let mask = ctx.upload("demo mask", bytemuck::cast_slice(&ones));
        // one parameter block per answer position (the positions run in one submission)
        let uniform = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let params: Vec<wgpu::Buffer> = (0..L)
            .map(|_| ctx.buffer("demo params", 32, uniform))
            .collect();
        let buffers = [
            (1, &prompts_buf),
            (2, &theta_buf),
            (3, &hidden),
            (4, &logits),
            (5, &tokens),
            (6, &rewards),
            (7, &grad),
            (8, &moments),
        ];
        let (sampling, update) = Stages::new(ctx, &params, buffers).all(answers);
        let loss = PolicyLoss::new(
            ctx,
            LossConfig {
                mode: cfg.mode,
                entropy_coeff: cfg.entropy_coeff,
                loss_agg_mode: LossAggMode::SeqMeanTokenMean,
                // dro has no default β_D: the demo takes 0.1
                dro_beta: Some(0.1),
                ..LossConfig::default()
            },
        )?;
        Ok(Demo {
            ctx: ctx.clone(),
            config: cfg,
            step: 0,
            answers,
            logits,
            tokens,
            rewards,
            grad,
            advantages,
            mask,
            params,
            sampling,
            update,
            loss,
            out: LossBuffers::new(ctx, rows),
        })
    }

    /// One training step (sample every prompt's group, rewards, advantages, the loss
    /// and its gradient, the policy's backward and Adam step), in one submission; the
    /// mean reward of the step's answers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(&mut self) -> Result<f32> {
        pollster::block_on(self.step_async())
    }

    /// [`Demo::step`] without blocking (the browser's form).
    pub async fn step_async(&mut self) -> Result<f32> {
        let (ctx, cfg, answers) = (&self.ctx, &self.config, self.answers);
        for pos in 0..L {
            let p = Params {
                answers,
                step: self.step,
                seed: cfg.seed,
                pos,
                lr: cfg.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            };
            ctx.queue()
                .write_buffer(&self.params[pos as usize], 0, bytemuck::bytes_of(&p));
        }
        let run = |encoder: &mut wgpu::CommandEncoder, list: &[Stage]| {
            for (p, bg, groups) in list {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                pass.set_pipeline(p);
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(*groups, 1, 1);
            }
        };
        let rows = answers * L;
        // one sequence of L rows per answer, one advantage per answer
        let logits_view =
            LogitsView::new(&self.logits, DType::F32, rows, V).with_sequences(L, (L * V) as u64);
        let inputs = LossInputs::new(
            logits_view,
            TargetsView::new(&self.tokens),
            F32View::new(&self.mask),
            Advantages::PerSequence(F32View::new(&self.advantages)),
        );
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        run(&mut encoder, &self.sampling);
        ctx.record_advantages(
            &mut encoder,
            AdvantageEstimator::Grpo,
            &F32View::new(&self.rewards),
            answers,
            cfg.group_size,
            &F32View::new(&self.advantages),
        )?;
        self.loss.record(
            &mut encoder,
            &inputs,
            Gradient::Into(GradView::new(&self.grad, DType::F32, V)),
            &self.out.outputs(),
        )?;
        run(&mut encoder, &self.update);
        let got = ctx
            .read_back_async(encoder, &[(&self.rewards, answers as u64 * 4)])
            .await?;
        let r: Vec<f32> = bytemuck::pod_collect_to_vec(&got[0]);
        self.step += 1;
        Ok(r.iter().sum::<f32>() / r.len() as f32)
    }
}
