//! The op against Burn's own composite of the same loss (log_softmax, gather, the
//! clipped ratio, the KL and entropy terms, the masked means, all in Burn tensor ops)
//! on a small model: the gradients of the model's weights agree.

mod common;

use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{devices, values, Case};
use wgpu_policy_loss_burn::{KlEstimator, LossAggMode, LossConfig, PolicyLossMode, Positions};

const H: usize = 16;

/// PPO/GRPO with asymmetric clip, k3 KL and an entropy bonus, in Burn's ops: `[B, S]`
/// rows aligned with their ids.
fn composite(logits: Tensor<3>, case: &Case, cfg: &LossConfig, device: &Device) -> Tensor<1> {
    let [b, s, _] = logits.dims();
    let logp_all = log_softmax(logits, 2);
    let ids: Tensor<3, Int> = case.ids(device).unsqueeze_dim(2);
    let logp: Tensor<2> = logp_all.clone().gather(2, ids).squeeze_dim(2);
    let entropy: Tensor<2> = -(logp_all.clone().exp() * logp_all)
        .sum_dim(2)
        .squeeze_dim(2);
    let old = case.rows(case.old.as_ref().unwrap(), device);
    let refp = case.rows(case.refp.as_ref().unwrap(), device);
    let a: Tensor<2> =
        Tensor::<1>::from_data(TensorData::new(case.advantages.clone(), [b]), device)
            .unsqueeze_dim::<2>(1)
            .expand::<2, _>([b, s]);
    let ratio = (logp.clone() - old).clamp(-20.0, 20.0).exp();
    let clipped = ratio
        .clone()
        .clamp(1.0 - cfg.clip_ratio_low, 1.0 + cfg.clip_ratio_high);
    let pg = (-a.clone() * ratio).max_pair(-a * clipped);
    // k3 as docs/MATH.md#the-kl-term has it: δ clamped to [−20, 20], the estimate to
    // [−10, 10]
    let d = (refp - logp).clamp(-20.0, 20.0);
    let kl = (d.clone().exp() - d - 1.0).clamp(-10.0, 10.0);
    let per_token = pg + kl * cfg.kl_coef - entropy * cfg.entropy_coeff;
    let mask = case.mask(device);
    match cfg.loss_agg_mode {
        LossAggMode::TokenMean => (per_token * mask.clone()).sum() / mask.sum(),
        LossAggMode::SeqMeanTokenMean => {
            let per_seq = (per_token * mask.clone()).sum_dim(1) / mask.sum_dim(1);
            per_seq.mean().reshape([1])
        }
        other => unreachable!("{other:?}"),
    }
}

#[test]
fn the_gradients_of_a_model_match_burns_composite() {
    for (name, device) in devices() {
        for agg in [LossAggMode::TokenMean, LossAggMode::SeqMeanTokenMean] {
            let cfg = LossConfig {
                mode: PolicyLossMode::PpoClip,
                loss_agg_mode: agg,
                kl_loss_type: KlEstimator::K3,
                kl_coef: 0.05,
                entropy_coeff: 0.01,
                clip_ratio_high: 0.28,
                ..LossConfig::default()
            };
            let case = Case::new(11, (4, 6, 29), Positions::Aligned);
            let model: Linear = LinearConfig::new(H, case.v).init(device);
            let x = Tensor::<3>::random(
                [case.b, case.s, H],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                device,
            );
            let ours = {
                let out = common::call(&case, model.forward(x.clone()), device, &cfg).unwrap();
                let grads = out.loss.backward();
                (
                    values(model.weight.grad(&grads).unwrap()),
                    values(out.loss.inner()),
                )
            };
            let theirs = {
                let loss = composite(model.forward(x), &case, &cfg, device);
                let grads = loss.backward();
                (
                    values(model.weight.grad(&grads).unwrap()),
                    values(loss.inner()),
                )
            };
            let what = format!("{name} {agg:?}");
            assert!(
                (ours.1[0] - theirs.1[0]).abs() <= 1e-5 * theirs.1[0].abs().max(1.0),
                "{what}: loss {} vs {}",
                ours.1[0],
                theirs.1[0]
            );
            // a NaN or ±Inf fails the element-wise test below; the scale is over the
            // finite values, so that an infinite one cannot widen it
            let scale = theirs
                .0
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f32, |m, v| m.max(v.abs()));
            for (i, (o, t)) in ours.0.iter().zip(&theirs.0).enumerate() {
                assert!(
                    (o - t).abs() <= 1e-4 * scale,
                    "{what}: weight gradient {i}: {o} vs Burn's {t}"
                );
            }
        }
    }
}

/// The extras are tensors like any other: the same call without them is on-policy.
#[test]
fn without_old_logprobs_the_ratio_is_one() {
    for (_, device) in devices() {
        let mut case = Case::new(5, (2, 4, 13), Positions::Aligned);
        case.old = None;
        let cfg = LossConfig {
            kl_coef: 0.0,
            ..LossConfig::default()
        };
        let logits = case.logits(device, burn::tensor::FloatDType::F32);
        let out = common::call(&case, logits, device, &cfg).unwrap();
        assert_eq!(out.metrics.pg_clipfrac, 0.0);
        assert_eq!(out.metrics.ppo_kl, 0.0);
    }
}
