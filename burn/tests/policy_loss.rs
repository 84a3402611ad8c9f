//! Burn's autodiff gradient through the op against the f64 reference: every mode ×
//! aggregation, f32 and bf16 logits, the three row layouts, per-sequence and per-token
//! advantages, on every adapter.

mod common;

use burn::tensor::{Device, FloatDType};
use common::{check, devices, grad_tol, max_abs, run, Case};
use wgpu_policy_loss_burn::{KlEstimator, LossAggMode, LossConfig, PolicyLossMode, Positions};

fn config(mode: PolicyLossMode, agg: LossAggMode, i: usize) -> LossConfig {
    LossConfig {
        mode,
        loss_agg_mode: agg,
        kl_loss_type: KlEstimator::ALL[i % KlEstimator::ALL.len()],
        kl_coef: 0.1,
        entropy_coeff: 0.01,
        clip_ratio_high: 0.28,
        dro_beta: (mode == PolicyLossMode::Dro).then_some(0.3),
        temperature: if i.is_multiple_of(2) { 1.0 } else { 0.9 },
        ..LossConfig::default()
    }
}

const POSITIONS: [Positions; 3] = [
    Positions::Aligned,
    Positions::Shifted,
    Positions::Response { prompt_len: 2 },
];

#[test]
fn every_mode_and_aggregation_matches_the_reference() {
    let mut i = 0;
    for (name, device) in devices() {
        for mode in PolicyLossMode::ALL {
            for agg in LossAggMode::ALL {
                let cfg = config(mode, agg, i);
                for dtype in [FloatDType::F32, FloatDType::BF16] {
                    i += 1;
                    let mut case = Case::new(i as u64, (3, 6, 37), POSITIONS[i % 3]);
                    if i.is_multiple_of(4) {
                        case = case.per_token(i as u64 + 1000);
                    }
                    let what = format!("{name} {mode:?} {agg:?} {dtype:?} {:?}", case.positions);
                    let (out, read, grad) = run(&case, &cfg, device, dtype);
                    let (want, want_grad) = case.reference(&cfg, &read);
                    let loss = common::values(out.loss)[0];
                    let tol = |w: f64| 2e-5 + 2e-5 * w.abs();
                    check(&format!("{what}: loss"), &[loss], &[want.loss], tol);
                    let logp = common::values(out.logprobs);
                    check(&format!("{what}: logprobs"), &logp, &want.logp, tol);
                    assert!(logp.iter().all(|&l| l <= 0.0), "{what}: a log-prob above 0");
                    let ent = common::values(out.entropy);
                    check(&format!("{what}: entropy"), &ent, &want.entropy, tol);
                    let lse = common::values(out.lse);
                    check(&format!("{what}: lse"), &lse, &want.lse, tol);
                    let scale = max_abs(&want_grad);
                    check(
                        &format!("{what}: gradient"),
                        &grad,
                        &want_grad,
                        grad_tol(dtype, scale),
                    );
                }
            }
        }
    }
}

/// The sampler's distribution through the op: per-token temperatures (junk on
/// masked-out rows, which are never read) and the logit softcap, alone and together.
#[test]
fn temperatures_and_softcap_match_the_reference() {
    let mut i = 0;
    for (name, device) in devices() {
        for (mode, temps, cap) in [
            (PolicyLossMode::PpoClip, true, None),
            (PolicyLossMode::Gspo, false, Some(3.0)),
            (PolicyLossMode::Cispo, true, Some(3.0)),
        ] {
            for dtype in [FloatDType::F32, FloatDType::BF16] {
                i += 1;
                let mut case = Case::new(300 + i as u64, (3, 6, 37), POSITIONS[i % 3]);
                if temps {
                    let t = (0..case.mask.len())
                        .map(|k| match case.mask[k] > 0.0 {
                            true => 0.6 + 0.07 * (k % 11) as f32,
                            false => -1.0,
                        })
                        .collect();
                    case.temps = Some(t);
                }
                let cfg = LossConfig {
                    logit_softcap: cap,
                    temperature: 1.0,
                    ..config(mode, LossAggMode::SeqMeanTokenMean, i)
                };
                let what = format!("{name} {mode:?} {dtype:?} temps {temps} softcap {cap:?}");
                let (out, read, grad) = run(&case, &cfg, device, dtype);
                let (want, want_grad) = case.reference(&cfg, &read);
                let tol = |w: f64| 2e-5 + 2e-5 * w.abs();
                let loss = common::values(out.loss)[0];
                check(&format!("{what}: loss"), &[loss], &[want.loss], tol);
                let masked = |v: Vec<f32>, w: &[f64]| -> (Vec<f32>, Vec<f64>) {
                    let keep = |k: &usize| case.mask[*k] > 0.0;
                    let g = (0..v.len()).filter(keep).map(|k| v[k]).collect();
                    (g, (0..w.len()).filter(keep).map(|k| w[k]).collect())
                };
                let (g, w) = masked(common::values(out.logprobs), &want.logp);
                check(&format!("{what}: logprobs"), &g, &w, tol);
                let (g, w) = masked(common::values(out.lse), &want.lse);
                check(&format!("{what}: lse"), &g, &w, tol);
                let scale = max_abs(&want_grad);
                check(
                    &format!("{what}: gradient"),
                    &grad,
                    &want_grad,
                    grad_tol(dtype, scale),
                );
            }
        }
    }
}

/// Given kept sets through the op (the loss over each row's kept ids, a gradient of
/// 0 outside them), with the softcap on one call, on each position layout.
#[test]
fn given_kept_sets_match_the_reference() {
    let mut i = 0;
    for (name, device) in devices() {
        for (mode, cap) in [
            (PolicyLossMode::PpoClip, None),
            (PolicyLossMode::Gspo, Some(3.0)),
        ] {
            for dtype in [FloatDType::F32, FloatDType::BF16] {
                i += 1;
                let mut case = Case::new(400 + i as u64, (3, 6, 37), POSITIONS[i % 3]);
                case.keep = Some(case.kept_sets(7));
                let cfg = LossConfig {
                    logit_softcap: cap,
                    temperature: 1.0,
                    ..config(mode, LossAggMode::SeqMeanTokenMean, i)
                };
                let what = format!("{name} {mode:?} {dtype:?} kept sets softcap {cap:?}");
                loss_and_gradient(&what, &case, &cfg, device, dtype);
            }
        }
    }
}

/// Kept sets computed in the kernels (top-k; top-p with the softcap) through the op,
/// each predicting row's target its row's largest logit (kept by any rule).
#[test]
fn computed_kept_sets_match_the_reference() {
    let mut i = 0;
    for (name, device) in devices() {
        for (mode, top_k, top_p, cap) in [
            (PolicyLossMode::PpoClip, 5, 1.0, None),
            (PolicyLossMode::Gspo, 0, 0.8, Some(3.0)),
        ] {
            for dtype in [FloatDType::F32, FloatDType::BF16] {
                i += 1;
                let mut case = Case::new(500 + i as u64, (3, 6, 37), POSITIONS[i % 3]);
                for b in 0..case.b {
                    for j in 0..case.r() {
                        let (row, id) = case.source(b, j);
                        let x = &case.logits[row * case.v..(row + 1) * case.v];
                        let top = (0..case.v).max_by(|&a, &c| x[a].total_cmp(&x[c]));
                        case.ids[id] = top.expect("a column") as i32;
                    }
                }
                let cfg = LossConfig {
                    logit_softcap: cap,
                    top_k,
                    top_p,
                    temperature: 1.0,
                    ..config(mode, LossAggMode::SeqMeanTokenMean, i)
                };
                let what = format!("{name} {mode:?} {dtype:?} top_k {top_k} top_p {top_p}");
                loss_and_gradient(&what, &case, &cfg, device, dtype);
            }
        }
    }
}

/// The op's loss and gradient on `case` against the reference.
fn loss_and_gradient(
    what: &str,
    case: &Case,
    cfg: &LossConfig,
    device: &Device,
    dtype: FloatDType,
) {
    let (out, read, grad) = run(case, cfg, device, dtype);
    let (want, want_grad) = case.reference(cfg, &read);
    let tol = |w: f64| 2e-5 + 2e-5 * w.abs();
    let loss = common::values(out.loss)[0];
    check(&format!("{what}: loss"), &[loss], &[want.loss], tol);
    let scale = max_abs(&want_grad);
    check(
        &format!("{what}: gradient"),
        &grad,
        &want_grad,
        grad_tol(dtype, scale),
    );
}

/// The chain rule: a loss scaled by c before `backward` gives c times the gradient.
#[test]
fn the_backward_multiplies_by_the_upstream_gradient() {
    for (name, device) in devices() {
        let case = Case::new(7, (2, 5, 19), Positions::Shifted);
        let cfg = config(PolicyLossMode::PpoClip, LossAggMode::TokenMean, 0);
        let (_, _, plain) = run(&case, &cfg, device, FloatDType::F32);
        let logits = case.logits(device, FloatDType::F32).require_grad();
        let out = common::call(&case, logits.clone(), device, &cfg).unwrap();
        let grads = (out.loss * -2.5).sum().backward();
        let scaled = common::values(logits.grad(&grads).unwrap());
        let want: Vec<f64> = plain.iter().map(|&g| -2.5 * g as f64).collect();
        check(&format!("{name}: -2.5 · loss"), &scaled, &want, |w| {
            1e-7 + 1e-6 * w.abs()
        });
    }
}
