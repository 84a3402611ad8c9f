//! A Burn model trained with GRPO through `wgpu-policy-loss-burn`: the policy loss is
//! a Burn op, and `loss.backward()` goes through it.
//!
//! Each step the model (an MLP over the prompt "a+b=", the answer position and the
//! previous digit) writes logits `[sequences, digits, 10]`; the op reads them in Burn's
//! buffer, computes the loss and, in the same pass, its gradient with respect to the
//! logits, which its backward hands to Burn's autodiff. Adam updates the weights.
//!
//! Run: `cargo run --release -p burn-grpo` (`-- --steps N --seed S`).

use std::error::Error;
use std::time::Instant;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{activation, Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use wgpu_policy_loss::reference::{self, compare};
use wgpu_policy_loss_burn::{
    advantages, policy_loss, AdvantageEstimator, LossAggMode, LossConfig, LossExtras,
    PolicyLossMode,
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

impl Row {
    /// Digit `pos` of sequence `s` (the `group` sequences of a prompt are consecutive),
    /// after the digits sampled so far.
    fn of(
        prompts: &[(usize, usize)],
        digits: &[Vec<usize>],
        group: usize,
        s: usize,
        pos: usize,
    ) -> Row {
        let (a, b) = prompts[s / group];
        let prev = pos.checked_sub(1).map(|p| digits[p][s]);
        Row { a, b, pos, prev }
    }
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

/// The op's gradient with respect to the logits, through Burn's autodiff, against the
/// f64 reference on the same logits: the largest difference, relative to the largest
/// reference value.
fn check_gradient(
    config: &LossConfig,
    logits: &Tensor<3>,
    targets: &Tensor<2, Int>,
    advantages: &Tensor<1>,
    tokens: &[u32],
    rewards: &[f32],
    group: usize,
) -> Res<f64> {
    // the same logits as a leaf, so that autodiff keeps their gradient
    let leaf = logits.clone().detach().require_grad();
    let [seqs, digits, _] = leaf.dims();
    let mask = Tensor::ones([seqs, digits], &leaf.device());
    let out = policy_loss(
        leaf.clone(),
        targets.clone(),
        mask,
        advantages.clone(),
        LossExtras::default(),
        config,
    )?;
    let grads = out.loss.backward();
    let to_f64 = |t: Tensor<3>| -> Res<Vec<f64>> {
        let v = t.into_data().convert::<f32>().try_into_vec::<f32>()?;
        Ok(v.into_iter().map(f64::from).collect())
    };
    let g = to_f64(leaf.grad(&grads).ok_or("the logits have no gradient")?)?;
    let x = to_f64(leaf.inner())?;
    let rewards: Vec<f64> = rewards.iter().map(|&r| f64::from(r)).collect();
    let adv = reference::advantages(AdvantageEstimator::Grpo, &rewards, group);
    let want = reference::policy_loss(
        config,
        &reference::Batch {
            logits: &x,
            vocab: V,
            rows_per_seq: DIGITS,
            targets: tokens,
            mask: &vec![1.0; tokens.len()],
            advantages: &adv,
            old_logp: None,
            ref_logp: None,
        },
    )?;
    if let Some(i) = g.iter().position(|v| !v.is_finite()) {
        return Err(format!("gradient element {i} is {}", g[i]).into());
    }
    let scale = compare::largest_finite(&want.grad);
    // NaN-aware: a NaN error stays NaN and fails below (f64::max would drop it)
    let err = g
        .iter()
        .zip(&want.grad)
        .fold(0f64, |m, (a, b)| compare::max_err(m, (a - b).abs()));
    if err.is_nan() || err > 1e-5 * scale {
        return Err(format!("gradient off by {err:e} (scale {scale:e})").into());
    }
    Ok(err)
}

/// Samples `group` answers to each of `prompts` random prompts, digit after digit, and
/// rewards them: (the prompts, the digits `[DIGITS][sequences]`, the rewards).
type Rollout = (Vec<(usize, usize)>, Vec<Vec<usize>>, Vec<f32>);

fn rollout(
    model: &Policy,
    device: &Device,
    rng: &mut StdRng,
    prompts: usize,
    group: usize,
) -> Res<Rollout> {
    let seqs = prompts * group;
    let prompts: Vec<(usize, usize)> = (0..prompts)
        .map(|_| (rng.random_range(0..A), rng.random_range(0..A)))
        .collect();
    let mut digits: Vec<Vec<usize>> = Vec::with_capacity(DIGITS);
    for pos in 0..DIGITS {
        let rows: Vec<Row> = (0..seqs)
            .map(|s| Row::of(&prompts, &digits, group, s, pos))
            .collect();
        let logits = model.forward(features(&rows, device)).inner();
        digits.push(sample(logits, rng)?);
    }
    let rewards = (0..seqs)
        .map(|s| {
            let (a, b) = prompts[s / group];
            let answer = digits.iter().fold(0, |n, d| 10 * n + d[s]);
            if answer == a + b {
                1.0
            } else {
                -0.1
            }
        })
        .collect();
    Ok((prompts, digits, rewards))
}

/// The example is also CI's check of the interop: it fails unless the mean reward
/// over the last 20 steps beats that of the first 20 by 0.2.
fn rose(curve: &[f32], steps: u32, secs: f64) -> Res<()> {
    let window = curve.len().clamp(1, 20);
    let avg = |r: &[f32]| r.iter().sum::<f32>() / r.len().max(1) as f32;
    let (first, last) = (avg(&curve[..window]), avg(&curve[curve.len() - window..]));
    println!(
        "mean reward over the first {window} steps {first:+.3}, over the last {window} {last:+.3}; \
         {steps} steps in {secs:.1} s"
    );
    if last.is_nan() || last <= first + 0.2 {
        return Err("the reward did not rise".into());
    }
    Ok(())
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

    // Burn's wgpu device, registered for the loss kernels (one device, one queue)
    let device = wgpu_policy_loss_burn::init()?.autodiff();
    println!("device: {device:?}");
    device.seed(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let config = LossConfig {
        mode: PolicyLossMode::PpoClip,
        loss_agg_mode: LossAggMode::SeqMeanTokenMean,
        entropy_coeff: 0.05,
        ..LossConfig::default()
    };

    let (prompts_per_step, group) = (16usize, 16usize);
    let seqs = prompts_per_step * group;

    let mut model = Policy::new(&device);
    let mut optim = AdamConfig::new().init();
    let lr = 0.01;
    let mut curve = Vec::with_capacity(steps as usize);
    let started = Instant::now();
    for step in 1..=steps {
        let (prompts, digits, rewards) =
            rollout(&model, &device, &mut rng, prompts_per_step, group)?;
        let mean = rewards.iter().sum::<f32>() / seqs as f32;
        curve.push(mean);

        // The sampled tokens, one sequence of DIGITS per row; GRPO's advantages from the
        // rewards, on the device.
        let tokens: Vec<u32> = (0..seqs)
            .flat_map(|s| digits.iter().map(move |d| d[s] as u32))
            .collect();
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let targets = Tensor::<2, Int>::from_data(TensorData::new(ids, [seqs, DIGITS]), &device);
        let rewards_t = Tensor::<1>::from_data(TensorData::new(rewards.clone(), [seqs]), &device);
        let adv = advantages(rewards_t, AdvantageEstimator::Grpo, group)?;

        // The training forward, with autodiff, and the loss as a Burn op.
        let train_rows: Vec<Row> = (0..seqs)
            .flat_map(|s| (0..DIGITS).map(move |pos| (s, pos)))
            .map(|(s, pos)| Row::of(&prompts, &digits, group, s, pos))
            .collect();
        let logits = model
            .forward(features(&train_rows, &device))
            .reshape([seqs, DIGITS, V]);
        if step == 1 {
            let err = check_gradient(&config, &logits, &targets, &adv, &tokens, &rewards, group)?;
            println!("step 1: the op's gradient through Burn's autodiff, max |Δ| = {err:.1e} vs the f64 reference");
        }
        let mask = Tensor::ones([seqs, DIGITS], &device);
        let out = policy_loss(logits, targets, mask, adv, LossExtras::default(), &config)?;
        let metrics = out.metrics;
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(lr, model, grads);

        if step == 1 || step % 10 == 0 || step == steps {
            println!(
                "step {step:4}  mean reward {mean:+.3}  loss {:+.4}  entropy {:.3}",
                metrics.loss, metrics.entropy_mean
            );
        }
    }
    rose(&curve, steps, started.elapsed().as_secs_f64())
}
