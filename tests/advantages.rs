//! Advantage estimators (shaders/advantages.wgsl) on every adapter, against the f64
//! reference.

mod common;

use common::*;
use rand::RngExt;
use wgpu_policy_loss::{reference, AdvantageEstimator};

#[test]
fn every_estimator_and_group_size() {
    for ctx in contexts() {
        for est in AdvantageEstimator::ALL {
            // long groups too: a team of lanes walks each one (one lane walking a group
            // of 70,000 ran past llvmpipe's 65,535 loop iterations)
            let shapes = [
                (1u32, 5usize),
                (2, 3),
                (4, 64),
                (8, 300),
                (16, 1),
                (300, 9),
                (70_000, 1),
            ];
            for (group, groups) in shapes {
                let mut r = rng(group as u64);
                // binary rewards as in the seed (+1 / -0.1), and continuous ones
                let rewards: Vec<f32> = (0..group as usize * groups)
                    .map(|i| {
                        if i % 3 == 0 {
                            r.random_range(-2.0f32..2.0)
                        } else if r.random_range(0.0f32..1.0) < 0.5 {
                            1.0
                        } else {
                            -0.1
                        }
                    })
                    .collect();
                let got = ctx.advantages(est, &rewards, group).unwrap();
                let r64: Vec<f64> = rewards.iter().map(|&x| x as f64).collect();
                let want = reference::advantages(est, &r64, group as usize);
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    close(g, w, 1e-5 * (1.0 + w.abs()))
                        .unwrap_or_else(|e| panic!("{} {est:?} G={group} [{i}]: {e}", name(ctx)));
                }
            }
        }
    }
}

/// Answers that were all alike carry no signal: exactly 0, not the f32 rounding of
/// their mean divided by GRPO's 1e-6 (which an ulp turns into ~1e-2).
#[test]
fn groups_whose_rewards_agree_get_exactly_zero() {
    for ctx in contexts() {
        for est in AdvantageEstimator::ALL {
            for group in [3u32, 5, 7, 16] {
                for value in [-0.1f32, 1.0, 0.3, -7.7] {
                    let rewards = vec![value; 4 * group as usize];
                    let got = ctx.advantages(est, &rewards, group).unwrap();
                    assert!(
                        got.iter().all(|&a| a == 0.0),
                        "{} {est:?} G={group} R={value}: {got:?}",
                        name(ctx)
                    );
                    let r64: Vec<f64> = rewards.iter().map(|&x| x as f64).collect();
                    let want = reference::advantages(est, &r64, group as usize);
                    assert!(
                        want.iter().all(|&a| a == 0.0),
                        "reference {est:?}: {want:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn closed_forms() {
    let ctx = &contexts()[0];
    let r = [1.0f32, -0.1, -0.1, 1.0];
    let a = ctx
        .advantages(AdvantageEstimator::GrpoNoStd, &r, 2)
        .unwrap();
    assert_eq!(a, vec![0.55, -0.55, -0.55, 0.55]);
    let a = ctx.advantages(AdvantageEstimator::Rloo, &r, 4).unwrap();
    // 1 − (−0.1 −0.1 + 1)/3
    assert!((a[0] - (1.0 - 0.8 / 3.0)).abs() < 1e-6);
    let a = ctx
        .advantages(AdvantageEstimator::Grpo, &[3.0, 3.0, 3.0], 3)
        .unwrap();
    assert_eq!(a, vec![0.0; 3]);
    assert!(ctx.advantages(AdvantageEstimator::Grpo, &r, 3).is_err());
    assert!(ctx.advantages(AdvantageEstimator::Grpo, &r, 0).is_err());
}
