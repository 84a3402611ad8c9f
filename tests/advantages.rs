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
            for (group, groups) in [(1u32, 5usize), (2, 3), (4, 64), (8, 300), (16, 1)] {
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
                    // (R − mean)/(std + 1e-6) amplifies f32 rounding when a group's std is 0
                    close(
                        g,
                        w,
                        1e-5 * (1.0 + w.abs()) + if w.abs() > 1e3 { 1e-3 * w.abs() } else { 0.0 },
                    )
                    .unwrap_or_else(|e| panic!("{} {est:?} G={group} [{i}]: {e}", name(ctx)));
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
