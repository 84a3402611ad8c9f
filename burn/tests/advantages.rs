//! Advantages from rewards as a tensor function, against the f64 reference, for every
//! estimator.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{devices, values};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use wgpu_policy_loss::reference;
use wgpu_policy_loss_burn::AdvantageEstimator;

#[test]
fn every_estimator_matches_the_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    let (n, group) = (24, 6);
    let rewards: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..2.0)).collect();
    let r64: Vec<f64> = rewards.iter().map(|&r| r as f64).collect();
    for (name, device) in devices() {
        for estimator in AdvantageEstimator::ALL {
            let t = Tensor::<1>::from_data(TensorData::new(rewards.clone(), [n]), device);
            let got = values(wgpu_policy_loss_burn::advantages(t, estimator, group).unwrap());
            let want = reference::advantages(estimator, &r64, group);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{name} {estimator:?}: {i}: {g} vs {w}"
                );
            }
        }
    }
}
