//! The log-prob primitive as a Burn op: ppo_clip written in Burn's tensor ops on its
//! `(logprobs, entropy, lse)` gives the library's fused ppo_clip gradient within f32
//! rounding; its outputs match the f64 reference; the backward takes the upstream
//! gradients of all three (a loss on `lse` alone reaches the logits too).

mod common;

use burn::tensor::{FloatDType, Tensor};
use common::{check, devices, max_abs, Case};
use wgpu_policy_loss::reference::sampler::{sampled_row, Sampler};
use wgpu_policy_loss_burn::{
    logprobs, LogProbConfig, LogProbExtras, LossAggMode, LossConfig, PolicyLossMode, Positions,
};

const GAMMA: f32 = 0.01;

/// ppo_clip with token-mean and an entropy bonus, in Burn's ops on the primitive.
fn ppo_on_the_primitive(
    case: &Case,
    logits: Tensor<3>,
    device: &burn::tensor::Device,
) -> Tensor<1> {
    let extras = LogProbExtras {
        temperatures: None,
        kept: case.extras(device).kept,
        positions: case.positions,
        ..LogProbExtras::default()
    };
    let out = logprobs(logits, case.ids(device), extras, &LogProbConfig::default()).unwrap();
    let mask = case.mask(device);
    let old = case.rows(case.old.as_ref().unwrap(), device);
    let adv = case.rows(&case.advantages, device);
    let ratio = (out.logprobs - old).exp();
    let clipped = ratio.clone().clamp(0.8, 1.2);
    let pg = (adv.clone().neg() * ratio).max_pair(adv.neg() * clipped);
    let per_token = pg - out.entropy * GAMMA;
    (per_token * mask.clone()).sum() / mask.sum()
}

#[test]
fn ppo_clip_in_burn_ops_matches_the_fused_loss() {
    for (name, device) in devices() {
        // the third over given kept sets (the primitive's and the loss's)
        for (i, positions) in [Positions::Aligned, Positions::Shifted, Positions::Shifted]
            .into_iter()
            .enumerate()
        {
            let mut case =
                Case::new(500 + i as u64, (3, 6, 41), positions).per_token(600 + i as u64);
            if i == 2 {
                case.keep = Some(case.kept_sets(9));
            }
            let cfg = LossConfig {
                mode: PolicyLossMode::PpoClip,
                loss_agg_mode: LossAggMode::TokenMean,
                entropy_coeff: GAMMA,
                ..LossConfig::default()
            };
            let (_, _, fused) = common::run(&case, &cfg, device, FloatDType::F32);
            let logits = case.logits(device, FloatDType::F32).require_grad();
            let loss = ppo_on_the_primitive(&case, logits.clone(), device);
            let grads = loss.backward();
            let got = common::values(logits.grad(&grads).expect("the logits have a gradient"));
            let want: Vec<f64> = fused.iter().map(|&g| g as f64).collect();
            let scale = max_abs(&want);
            // two f32 evaluations of one sum: within f32 rounding of the largest entry
            check(
                &format!("{name} {positions:?}: ∂L/∂logits"),
                &got,
                &want,
                |_| 2e-6 * scale + 1e-9,
            );
        }
    }
}

/// The outputs against the reference, with per-token temperatures and a softcap; a
/// loss on `lse` alone (`Σ c·lse`) gives the reference's `c·p` gradient.
#[test]
fn outputs_and_an_lse_loss_match_the_reference() {
    for (name, device) in devices() {
        let case = Case::new(701, (2, 5, 29), Positions::Aligned);
        let r = case.r();
        let temps: Vec<f32> = (0..2 * r).map(|k| 0.6 + 0.1 * k as f32).collect();
        let cfg = LogProbConfig {
            temperature: 1.0,
            logit_softcap: Some(3.0),
            ..LogProbConfig::default()
        };
        let logits = case.logits(device, FloatDType::F32).require_grad();
        let extras = LogProbExtras {
            temperatures: Some(case.rows(&temps, device)),
            kept: None,
            positions: case.positions,
            ..LogProbExtras::default()
        };
        let out = logprobs(logits.clone(), case.ids(device), extras, &cfg).unwrap();
        let c: Vec<f32> = (0..2 * r).map(|k| (k % 3) as f32 - 1.0).collect();
        let loss = (out.lse.clone() * case.rows(&c, device)).sum();
        let grad = common::values(logits.grad(&loss.backward()).unwrap());
        let (lp, ent, lse) = (
            common::values(out.logprobs),
            common::values(out.entropy),
            common::values(out.lse),
        );
        let sampler = Sampler {
            softcap: Some(3.0),
            ..Sampler::default()
        };
        let v = case.v;
        for k in 0..2 * r {
            let x: Vec<f64> = case.logits[k * v..(k + 1) * v]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let row = sampled_row(&x, temps[k] as f64, &sampler, None).unwrap();
            let y = case.ids[k] as usize;
            let tol = |w: f64| 2e-5 + 2e-5 * w.abs();
            check(
                &format!("{name}: logprobs[{k}]"),
                &[lp[k]],
                &[row.logp(y).unwrap()],
                tol,
            );
            check(
                &format!("{name}: entropy[{k}]"),
                &[ent[k]],
                &[row.entropy],
                tol,
            );
            check(&format!("{name}: lse[{k}]"), &[lse[k]], &[row.lse], tol);
            let want = row.vjp(None, 0.0, 0.0, c[k] as f64);
            check(
                &format!("{name}: ∂Σc·lse/∂x row {k}"),
                &grad[k * v..(k + 1) * v],
                &want,
                |_| 1e-6,
            );
        }
    }
}
