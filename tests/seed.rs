//! The seed's scenario: a prompt, a rewarded answer (+1.0) and a wrong one (−0.1). One
//! gradient step with the library's gradient makes the rewarded answer more likely and
//! the wrong one less likely.

mod common;

use common::*;
use wgpu_policy_loss::{
    AdvantageEstimator, DType, HostBatch, HostLogits, LossAggMode, LossConfig, PolicyLossMode,
};

const V: usize = 11;
const ANSWER_LEN: usize = 3;

/// A position-only policy: one row of logits per answer position, shared by both
/// answers (so that raising one answer's tokens is felt by the other).
fn answer_logp(theta: &[f32], answer: &[u32]) -> f64 {
    answer
        .iter()
        .enumerate()
        .map(|(p, &y)| {
            let row: Vec<f64> = theta[p * V..(p + 1) * V]
                .iter()
                .map(|&x| x as f64)
                .collect();
            wgpu_policy_loss::reference::row_stats(&row, y as usize, 1.0).logp
        })
        .sum()
}

fn step(
    ctx: &wgpu_policy_loss::Context,
    cfg: &LossConfig,
    theta: &[f32],
    answers: [&[u32]; 2],
    adv: &[f32],
) -> Vec<f32> {
    // the batch: both answers, each with the shared rows
    let logits: Vec<f32> = [theta, theta].concat();
    let targets: Vec<u32> = answers.concat();
    let mask = vec![1.0f32; 2 * ANSWER_LEN];
    let batch = HostBatch {
        kept: None,
        temperatures: None,
        logits: HostLogits::F32(&logits),
        vocab: V as u32,
        rows_per_seq: Some(ANSWER_LEN as u32),
        targets: &targets,
        mask: &mask,
        advantages: adv,
        old_logprobs: None,
        ref_logprobs: None,
    };
    let out = ctx.policy_loss(cfg, &batch, Some(DType::F32)).unwrap();
    let g = out.grad.unwrap().to_f32();
    // chain rule through the shared rows: sum both answers' gradients, then SGD
    let lr = 2.0;
    (0..theta.len())
        .map(|i| theta[i] - lr * (g[i] + g[ANSWER_LEN * V + i]))
        .collect()
}

#[test]
fn one_step_raises_the_rewarded_answer() {
    let theta = random_logits(42, ANSWER_LEN * V, 0.5);
    let good: &[u32] = &[3, 7, 1]; // "= 2": reward +1.0
    let bad: &[u32] = &[4, 8, 5]; // a wrong answer: reward -0.1
    let rewards = [1.0f32, -0.1];
    for ctx in contexts() {
        // the seed: REINFORCE, -mean_t(logp)·R per answer
        let seed_cfg = LossConfig {
            mode: PolicyLossMode::Reinforce,
            loss_agg_mode: LossAggMode::SeqMeanTokenMean,
            ..LossConfig::default()
        };
        // GRPO: group-normalised advantages, PPO clip (on-policy)
        let grpo_cfg = LossConfig::default();
        let grpo_adv = ctx
            .advantages(AdvantageEstimator::Grpo, &rewards, 2)
            .unwrap();
        for (cfg, adv) in [(seed_cfg, rewards.to_vec()), (grpo_cfg, grpo_adv)] {
            let next = step(ctx, &cfg, &theta, [good, bad], &adv);
            let (g0, g1) = (answer_logp(&theta, good), answer_logp(&next, good));
            let (b0, b1) = (answer_logp(&theta, bad), answer_logp(&next, bad));
            assert!(
                g1 > g0 + 1e-3,
                "{} {:?}: rewarded answer logp {g0} -> {g1}",
                name(ctx),
                cfg.mode
            );
            assert!(
                b1 < b0 - 1e-3,
                "{} {:?}: wrong answer logp {b0} -> {b1}",
                name(ctx),
                cfg.mode
            );
        }
    }
}
