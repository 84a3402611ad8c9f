//! A Burn model trained with GRPO through `wgpu-policy-loss`, on one shared wgpu device.
//!
//! Burn owns the device. Each step its model (an MLP over the prompt "a+b=", the answer
//! position and the previous digit) writes logits `[rows, 10]`; the loss kernels read
//! that very buffer — no copy, no readback — and write the gradient of the policy loss
//! with respect to the logits into a tensor Burn allocated. Burn's autodiff takes it from
//! there through the surrogate `sum(logits · stop_grad(g))`, whose gradient with respect
//! to the logits is exactly `g`, and Adam updates the weights.
//!
//! Run: `cargo run --release -p burn-grpo` (`-- --steps N --seed S`).

use std::error::Error;

use burn::backend::wgpu::{AutoCompiler, CubeTensor, WgpuResource};
use burn::backend::Cube;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{activation, DType as BurnDType, Device, Tensor, TensorData};
use cubecl::wgpu::WgpuServer;
use cubecl_runtime::storage::ManagedResource;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use wgpu_policy_loss::reference;
use wgpu_policy_loss::{
    AdvantageEstimator, Advantages, Context, DType, F32View, GradView, Gradient, LogitsView,
    LossAggMode, LossBuffers, LossConfig, LossInputs, Metrics, PolicyLoss, PolicyLossMode,
    TargetsView,
};

type Res<T> = Result<T, Box<dyn Error>>;

/// Operands range over 0..A; answers are DIGITS digits (leading zero included), the
/// vocabulary the V digits.
const A: usize = 10;
const DIGITS: usize = 2;
const V: usize = 10;
/// One-hot features: a, b, answer position, previous digit (or "none").
const FEATURES: usize = 2 * A + DIGITS + V + 1;
const HIDDEN: usize = 128;

#[derive(Module, Debug)]
struct Policy {
    hidden: Linear,
    head: Linear,
    relu: Relu,
}

impl Policy {
    fn new(device: &Device) -> Self {
        Policy {
            hidden: LinearConfig::new(FEATURES, HIDDEN).init(device),
            head: LinearConfig::new(HIDDEN, V).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.head.forward(self.relu.forward(self.hidden.forward(x)))
    }
}

/// One logits row: answer digit `pos` of "a+b=", after digit `prev`.
#[derive(Clone, Copy)]
struct Row {
    a: usize,
    b: usize,
    pos: usize,
    prev: Option<usize>,
}

/// One-hot features of each row.
fn features(rows: &[Row], device: &Device) -> Tensor<2> {
    let mut x = vec![0f32; rows.len() * FEATURES];
    for (f, r) in x.chunks_mut(FEATURES).zip(rows) {
        f[r.a] = 1.0;
        f[A + r.b] = 1.0;
        f[2 * A + r.pos] = 1.0;
        f[2 * A + DIGITS + r.prev.unwrap_or(V)] = 1.0;
    }
    Tensor::from_data(TensorData::new(x, [rows.len(), FEATURES]), device)
}

/// Samples one digit per row from the policy's logits (read back: only `rows × 10` floats).
fn sample(logits: Tensor<2>, rng: &mut StdRng) -> Res<Vec<usize>> {
    let probs = activation::softmax(logits, 1)
        .into_data()
        .try_into_vec::<f32>()?;
    Ok(probs
        .chunks(V)
        .map(|p| {
            let mut u = rng.random_range(0.0f32..1.0);
            p.iter()
                .position(|&q| {
                    u -= q;
                    u < 0.0
                })
                .unwrap_or(V - 1)
        })
        .collect())
}

/// The wgpu buffer behind a float tensor of Burn's wgpu backend, and the tensor's place in
/// it. CubeCL suballocates tensors from larger pages, so the view carries the byte offset;
/// the guard keeps the allocation from being reused while we hold it.
struct Borrowed {
    tensor: CubeTensor,
    guard: ManagedResource<WgpuResource>,
}

impl Borrowed {
    fn new(t: Tensor<2>) -> Res<Self> {
        let tensor = t
            .inner()
            .try_into_primitive::<Cube>()
            .map_err(|e| format!("not a tensor of Burn's wgpu backend: {e:?}"))?;
        if tensor.dtype != BurnDType::F32 {
            return Err(format!("expected f32 logits, got {:?}", tensor.dtype).into());
        }
        let guard = tensor
            .client
            .get_resource::<WgpuServer<AutoCompiler>>(tensor.handle.clone())
            .map_err(|e| format!("no wgpu resource: {e:?}"))?;
        Ok(Borrowed { tensor, guard })
    }

    fn buffer(&self) -> &wgpu_policy_loss::wgpu::Buffer {
        &self.guard.resource().buffer
    }

    /// `[rows, cols]` with unit column stride, as a row layout for the loss kernels.
    fn logits_view(&self) -> Res<LogitsView<'_>> {
        let shape = self.tensor.meta.shape();
        let strides = self.tensor.meta.strides();
        if strides[1] != 1 {
            return Err(format!("logits strides {strides:?}: columns must be contiguous").into());
        }
        Ok(
            LogitsView::new(self.buffer(), DType::F32, shape[0] as u32, shape[1] as u32)
                .with_row_stride(strides[0] as u64)
                .with_byte_offset(self.guard.resource().offset)?,
        )
    }
}

/// The largest difference between the gradient in Burn's tensor and the reference's,
/// relative to the largest reference value.
fn check_gradient(
    loss_fn: &PolicyLoss,
    logits: &Tensor<2>,
    grad: &Tensor<2>,
    tokens: &[u32],
    rewards: &[f32],
    group: usize,
) -> Res<f64> {
    let to_f64 = |t: &Tensor<2>| -> Res<Vec<f64>> {
        let v = t.clone().inner().into_data().try_into_vec::<f32>()?;
        Ok(v.into_iter().map(f64::from).collect())
    };
    let (x, g) = (to_f64(logits)?, to_f64(grad)?);
    let mask = vec![1.0; tokens.len()];
    let rewards: Vec<f64> = rewards.iter().map(|&r| f64::from(r)).collect();
    let adv = reference::advantages(AdvantageEstimator::Grpo, &rewards, group);
    let want = reference::policy_loss(
        loss_fn.config(),
        &reference::Batch {
            logits: &x,
            vocab: V,
            rows_per_seq: DIGITS,
            targets: tokens,
            mask: &mask,
            advantages: &adv,
            old_logp: None,
            ref_logp: None,
        },
    )?;
    if let Some(i) = g.iter().position(|v| !v.is_finite()) {
        return Err(format!("gradient element {i} in Burn's tensor is {}", g[i]).into());
    }
    let scale = want.grad.iter().fold(0f64, |m, v| m.max(v.abs()));
    let err = g
        .iter()
        .zip(&want.grad)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    if err > 1e-5 * scale {
        return Err(format!("gradient in Burn's tensor off by {err:e} (scale {scale:e})").into());
    }
    Ok(err)
}

fn main() -> Res<()> {
    let mut steps = 300u32;
    let mut seed = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => steps = args.next().ok_or("--steps N")?.parse()?,
            "--seed" => seed = args.next().ok_or("--seed S")?.parse()?,
            _ => return Err(format!("unknown argument {a} (use --steps N, --seed S)").into()),
        }
    }

    // Burn brings the device up; this library takes the same device and queue.
    let (device, setup) = Device::wgpu_options().init_with_setup()?;
    let ctx = Context::from_wgpu(setup.device.clone(), setup.queue.clone());
    println!("device: {}", ctx.describe());
    let device = device.autodiff();
    device.seed(seed);
    let mut rng = StdRng::seed_from_u64(seed);

    let loss_fn = PolicyLoss::new(
        &ctx,
        LossConfig {
            mode: PolicyLossMode::PpoClip,
            loss_agg_mode: LossAggMode::SeqMeanTokenMean,
            entropy_coeff: 0.05,
            ..LossConfig::default()
        },
    )?;

    let (prompts_per_step, group) = (16usize, 16usize);
    let seqs = prompts_per_step * group;
    let rows = DIGITS * seqs;
    // O(rows) buffers of ours: targets, mask, rewards, advantages, results. The
    // [rows, V] logits and gradient stay Burn's.
    let usage = wgpu_policy_loss::wgpu::BufferUsages::STORAGE
        | wgpu_policy_loss::wgpu::BufferUsages::COPY_DST;
    let targets = ctx.buffer("targets", rows as u64 * 4, usage);
    let mask = ctx.upload("mask", bytemuck::cast_slice(&vec![1f32; rows]));
    let reward_buf = ctx.buffer("rewards", seqs as u64 * 4, usage);
    let advantages = ctx.buffer("advantages", seqs as u64 * 4, usage);
    let out = LossBuffers::new(&ctx, rows as u32);

    let mut model = Policy::new(&device);
    let mut optim = AdamConfig::new().init();
    let lr = 0.01;
    let mut curve = Vec::with_capacity(steps as usize);
    for step in 1..=steps {
        // Roll out: each prompt `group` times, the digits one after the other.
        let prompts: Vec<(usize, usize)> = (0..prompts_per_step)
            .map(|_| (rng.random_range(0..A), rng.random_range(0..A)))
            .collect();
        let seq_prompt = |s: usize| prompts[s / group];
        let row = |s: usize, pos: usize, digits: &[Vec<usize>]| {
            let (a, b) = seq_prompt(s);
            let prev = pos.checked_sub(1).map(|p| digits[p][s]);
            Row { a, b, pos, prev }
        };
        let mut digits: Vec<Vec<usize>> = Vec::with_capacity(DIGITS);
        for pos in 0..DIGITS {
            let rows: Vec<Row> = (0..seqs).map(|s| row(s, pos, &digits)).collect();
            let logits = model.forward(features(&rows, &device)).inner();
            digits.push(sample(logits, &mut rng)?);
        }
        let rewards: Vec<f32> = (0..seqs)
            .map(|s| {
                let (a, b) = seq_prompt(s);
                let answer = digits.iter().fold(0, |n, d| 10 * n + d[s]);
                if answer == a + b {
                    1.0
                } else {
                    -0.1
                }
            })
            .collect();
        let mean = rewards.iter().sum::<f32>() / seqs as f32;
        curve.push(mean);

        // The rewards and the sampled tokens (sequence s is rows DIGITS·s, DIGITS·s + 1,
        // …) go up; the GRPO advantages are computed on the device, in the loss's encoder.
        ctx.queue()
            .write_buffer(&reward_buf, 0, bytemuck::cast_slice(&rewards));
        let tokens: Vec<u32> = (0..seqs)
            .flat_map(|s| digits.iter().map(move |d| d[s] as u32))
            .collect();
        ctx.queue()
            .write_buffer(&targets, 0, bytemuck::cast_slice(&tokens));

        // The training forward, with autodiff.
        let train_rows: Vec<Row> = (0..seqs)
            .flat_map(|s| (0..DIGITS).map(move |pos| (s, pos)))
            .map(|(s, pos)| row(s, pos, &digits))
            .collect();
        let logits = model.forward(features(&train_rows, &device));

        // The loss reads Burn's logits buffer and writes into a tensor Burn allocated
        // (left uninitialised: the view covers every row, so every element is written).
        let grad = Tensor::<2>::empty([rows, V], &device.clone().inner());
        let (l_buf, g_buf) = (Borrowed::new(logits.clone())?, Borrowed::new(grad.clone())?);
        // Burn's queued work (the forward, the zeros) goes to the shared queue first.
        l_buf.tensor.client.flush()?;
        let view = l_buf
            .logits_view()?
            .with_sequences(DIGITS as u32, (DIGITS * V) as u64);
        let g_view = g_buf
            .logits_view()?
            .with_sequences(DIGITS as u32, (DIGITS * V) as u64);
        let inputs = LossInputs::new(
            view,
            TargetsView::new(&targets),
            F32View::new(&mask),
            Advantages::PerSequence(F32View::new(&advantages)),
        );
        let mut encoder = ctx.device().create_command_encoder(
            &wgpu_policy_loss::wgpu::CommandEncoderDescriptor {
                label: Some("policy loss"),
            },
        );
        let gradient = Gradient::Into(GradView::like(g_buf.buffer(), DType::F32, &g_view));
        ctx.record_advantages(
            &mut encoder,
            AdvantageEstimator::Grpo,
            &F32View::new(&reward_buf),
            seqs as u32,
            group as u32,
            &F32View::new(&advantages),
        )?;
        loss_fn.record(&mut encoder, &inputs, gradient, &out.outputs())?;
        let metrics = ctx.read_f32s(encoder, &[&out.metrics], Metrics::LEN)?;
        let metrics = Metrics::from_slice(&metrics[0]);
        metrics.check(V as u32)?;
        // (byte offset of the logits, of the gradient, whether one buffer holds both)
        let placement = (
            l_buf.guard.resource().offset,
            g_buf.guard.resource().offset,
            l_buf.buffer() == g_buf.buffer(),
        );
        drop((l_buf, g_buf));

        if step == 1 {
            // Once: Burn reads back what the kernels wrote into its tensor, checked
            // against the f64 reference on the same logits.
            let err = check_gradient(&loss_fn, &logits, &grad, &tokens, &rewards, group)?;
            let (l_at, g_at, one) = placement;
            let one = if one { " (the same buffer)" } else { "" };
            println!(
                "step 1: logits read from Burn's buffer at byte {l_at}, gradient written into \
                 Burn's buffer at byte {g_at}{one}; read back through Burn, max |Δ| = {err:.1e} \
                 vs the f64 reference"
            );
        }

        // Burn's backward from the surrogate: d/dlogits sum(logits · g) = g, g a constant.
        let surrogate = (logits * grad).sum();
        let grads = GradientsParams::from_grads(surrogate.backward(), &model);
        model = optim.step(lr, model, grads);

        if step == 1 || step % 10 == 0 || step == steps {
            println!(
                "step {step:4}  mean reward {mean:+.3}  loss {:+.4}  entropy {:.3}",
                metrics.loss, metrics.entropy_mean
            );
        }
    }
    // The example is also CI's check of the interop: it fails unless the reward rose.
    let window = curve.len().clamp(1, 20);
    let avg = |r: &[f32]| r.iter().sum::<f32>() / r.len().max(1) as f32;
    let (first, last) = (avg(&curve[..window]), avg(&curve[curve.len() - window..]));
    println!(
        "mean reward over the first {window} steps {first:+.3}, over the last {window} {last:+.3}"
    );
    if last.is_nan() || last <= first + 0.2 {
        return Err("the reward did not rise".into());
    }
    Ok(())
}
