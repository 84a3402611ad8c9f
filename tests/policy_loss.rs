//! The policy loss and its gradient (shaders/policy_loss.wgsl and its helpers) on every
//! adapter, against the f64 reference: every mode × aggregation × KL estimator × dtype,
//! with and without temperature, entropy bonus and dual-clip.

mod common;

use common::*;
use wgpu_policy_loss::{DType, KlEstimator, LossAggMode, LossConfig, PolicyLossMode};

fn cfg(mode: PolicyLossMode, agg: LossAggMode, kl: KlEstimator, extra: usize) -> LossConfig {
    let (tau, beta, gamma, dual) = [(1.0, 0.0, 0.0, None), (0.7, 0.2, 0.03, Some(3.0))][extra];
    LossConfig {
        mode,
        loss_agg_mode: agg,
        kl_loss_type: kl,
        kl_coef: beta,
        entropy_coeff: gamma,
        temperature: tau,
        clip_ratio_c: dual,
        clip_ratio_high: 0.28,
        ..LossConfig::default()
    }
}

#[test]
fn every_mode_aggregation_and_estimator() {
    let case = LossCase::new(1, 3, 5, 37);
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for agg in LossAggMode::ALL {
                for kl in KlEstimator::ALL {
                    for extra in 0..2 {
                        let c = cfg(mode, agg, kl, extra);
                        let using = Use { per_token_adv: extra == 1, old: true, refp: true };
                        check_loss(ctx, &c, &case, DType::F32, Some(DType::F32), using);
                    }
                }
            }
        }
    }
}

#[test]
fn every_dtype_and_gradient_dtype() {
    // odd V: 16-bit gradient rows share words with their neighbours
    let case = LossCase::new(2, 3, 4, 301);
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for dtype in DType::ALL {
                for grad in DType::ALL {
                    let c = cfg(mode, LossAggMode::SeqMeanTokenMean, KlEstimator::K3, 1);
                    let using = Use { per_token_adv: false, old: true, refp: true };
                    check_loss(ctx, &c, &case, dtype, Some(grad), using);
                }
            }
        }
    }
}

#[test]
fn on_policy_and_without_reference() {
    let case = LossCase::new(3, 2, 6, 129);
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for agg in LossAggMode::ALL {
                let c = cfg(mode, agg, KlEstimator::K1, 0);
                let using = Use { per_token_adv: false, old: false, refp: false };
                check_loss(ctx, &c, &case, DType::Bf16, Some(DType::F32), using);
            }
        }
    }
}

#[test]
fn global_normalizer_and_l_norm() {
    let case = LossCase::new(4, 3, 5, 64);
    for ctx in contexts() {
        let mut c = cfg(PolicyLossMode::PpoClip, LossAggMode::TokenMean, KlEstimator::K2, 1);
        c.global_normalizer = Some(123.0);
        let using = Use { per_token_adv: true, old: true, refp: true };
        check_loss(ctx, &c, &case, DType::F16, Some(DType::F16), using);
        c.loss_agg_mode = LossAggMode::SeqMeanTokenSumNorm;
        c.l_norm = Some(4096.0);
        check_loss(ctx, &c, &case, DType::F32, Some(DType::Bf16), using);
    }
}

#[test]
fn forward_only_matches() {
    let case = LossCase::new(5, 3, 5, 1000);
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            let c = cfg(mode, LossAggMode::TokenMean, KlEstimator::K3, 1);
            let using = Use { per_token_adv: false, old: true, refp: true };
            check_loss(ctx, &c, &case, DType::Bf16, None, using);
        }
    }
}

#[test]
fn large_vocabulary() {
    let case = LossCase::new(6, 2, 3, 151936);
    for ctx in contexts() {
        let c = cfg(PolicyLossMode::PpoClip, LossAggMode::SeqMeanTokenMean, KlEstimator::K3, 1);
        let using = Use { per_token_adv: false, old: true, refp: true };
        check_loss(ctx, &c, &case, DType::Bf16, Some(DType::Bf16), using);
    }
}
