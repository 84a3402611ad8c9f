//! `policy_loss_head` (the loss from hidden states and the lm-head weight) against
//! `policy_loss` on the logits Burn's matmul makes of the same two: the loss, and the
//! gradients Burn's autodiff returns for hidden and for the weight.

mod common;

use burn::tensor::{Distribution, Tensor};
use common::{devices, values, Case};
use wgpu_policy_loss_burn::{policy_loss_head, LossConfig, PolicyLossMode, Positions};

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32]) {
    // a NaN or ±Inf fails the element-wise test below; the scale is over the finite
    // values, so that an infinite one cannot widen it
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * scale + 1e-6,
            "{what}: element {i} is {g}, through the logits {w}"
        );
    }
}

#[test]
fn the_head_gives_both_gradients() {
    let h = 24;
    for (name, device) in devices() {
        for (i, mode) in [
            PolicyLossMode::PpoClip,
            PolicyLossMode::Gspo,
            PolicyLossMode::Cispo,
        ]
        .into_iter()
        .enumerate()
        {
            let cfg = LossConfig {
                mode,
                kl_coef: 0.05,
                entropy_coeff: 0.01,
                ..LossConfig::default()
            };
            let case = Case::new(
                30 + i as u64,
                (3, 7, 45),
                [Positions::Shifted, Positions::Aligned][i % 2],
            );
            let hidden =
                Tensor::<3>::random([case.b, case.s, h], Distribution::Normal(0.0, 1.0), device)
                    .require_grad();
            let weight = Tensor::<2>::random([case.v, h], Distribution::Normal(0.0, 0.3), device)
                .require_grad();
            // a chunk of 4 rows that does not divide them
            let extras = case.extras(device).with_chunk_rows(4);
            let ours = policy_loss_head(
                hidden.clone(),
                weight.clone(),
                case.ids(device),
                case.mask(device),
                case.advantages(device),
                extras,
                &cfg,
            )
            .unwrap();
            let g = ours.loss.clone().backward();
            let (gh, gw) = (
                values(hidden.grad(&g).unwrap()),
                values(weight.grad(&g).unwrap()),
            );
            let logits = hidden
                .clone()
                .matmul(weight.clone().transpose().unsqueeze::<3>());
            let theirs = common::call(&case, logits, device, &cfg).unwrap();
            let t = theirs.loss.clone().backward();
            let what = format!("{name} {mode:?}");
            close(
                &format!("{what}: loss"),
                &values(ours.loss),
                &values(theirs.loss),
            );
            // the head makes the logits of masked-in rows only
            let kept = |v: Vec<f32>| -> Vec<f32> {
                v.into_iter()
                    .zip(&case.mask)
                    .filter(|(_, &m)| m > 0.0)
                    .map(|(x, _)| x)
                    .collect()
            };
            close(
                &format!("{what}: logprobs"),
                &kept(values(ours.logprobs)),
                &kept(values(theirs.logprobs)),
            );
            close(
                &format!("{what}: ∂L/∂hidden"),
                &gh,
                &values(hidden.grad(&t).unwrap()),
            );
            close(
                &format!("{what}: ∂L/∂W"),
                &gw,
                &values(weight.grad(&t).unwrap()),
            );
        }
    }
}
