//! `policy_loss_head` (the loss from hidden states and the lm-head weight) against
//! `policy_loss` on the logits Burn's matmul makes of the same two: the loss, and the
//! gradients Burn's autodiff returns for hidden and for the weight. The log-prob
//! primitive's head form against its logits form likewise.

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use common::{devices, values, Case};
use wgpu_policy_loss_burn::{
    logprobs, logprobs_head, policy_loss_head, LogProbConfig, LogProbExtras, LogProbsOutput,
    LossConfig, PolicyLossMode, Positions,
};

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

/// A loss on all three of the primitive's outputs (each upstream vector non-zero and
/// differing per row), as a trainer would write one in Burn's ops.
fn loss_on(out: LogProbsOutput, case: &Case, device: &Device) -> Tensor<1> {
    let w: Vec<f32> = (0..case.b * case.r())
        .map(|k| 0.5 + (k % 5) as f32 * 0.25)
        .collect();
    let w = case.rows(&w, device);
    let pg = out.logprobs.exp() * w.clone();
    (pg - out.entropy * 0.1 + out.lse * w * 0.05).sum()
}

/// Random hidden `[B, S, h]` and weight `[V, h]`, tracked, and the logits `hidden · Wᵀ`
/// as the host computes them (row by row, f64).
fn head_tensors(case: &Case, h: usize, device: &Device) -> (Tensor<3>, Tensor<2>, Vec<f64>) {
    let hidden = Tensor::<3>::random([case.b, case.s, h], Distribution::Normal(0.0, 1.0), device)
        .require_grad();
    let weight =
        Tensor::<2>::random([case.v, h], Distribution::Normal(0.0, 0.3), device).require_grad();
    let (x, w) = (values(hidden.clone()), values(weight.clone()));
    let logits = (0..case.b * case.s)
        .flat_map(|row| {
            let x = &x[row * h..(row + 1) * h];
            w.chunks(h)
                .map(|c| c.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum())
                .collect::<Vec<f64>>()
        })
        .collect();
    (hidden, weight, logits)
}

/// The primitive from hidden and the weight gives the outputs and the gradients (of a
/// loss on all three outputs) that it gives from the logits Burn's matmul makes: with
/// the softcap and temperatures, given kept sets, and a computed top-k; chunks of 4
/// rows that do not divide the rows.
#[test]
fn the_primitive_from_the_head_matches_it_from_the_logits() {
    let h = 24;
    for (name, device) in devices() {
        for i in 0..3 {
            let positions = [
                Positions::Shifted,
                Positions::Aligned,
                Positions::Response { prompt_len: 2 },
            ][i];
            let mut case = Case::new(40 + i as u64, (3, 7, 45), positions);
            let (hidden, weight, logits) = head_tensors(&case, h, device);
            let mut cfg = LogProbConfig::default();
            let mut temps = None;
            match i {
                0 => {
                    cfg.logit_softcap = Some(2.5);
                    let t: Vec<f32> = (0..case.b * case.r())
                        .map(|k| 0.7 + 0.05 * k as f32)
                        .collect();
                    temps = Some(case.rows(&t, device));
                }
                1 => case.keep = Some(case.kept_sets(7)),
                _ => {
                    // the top 4 kept: each predicting row's target its largest logit
                    cfg.top_k = 4;
                    for b in 0..case.b {
                        for j in 0..case.r() {
                            let (row, id) = case.source(b, j);
                            let x = &logits[row * case.v..(row + 1) * case.v];
                            let top = (0..case.v).max_by(|&a, &c| x[a].total_cmp(&x[c]));
                            case.ids[id] = top.expect("a column") as i32;
                        }
                    }
                }
            }
            let extras = LogProbExtras {
                temperatures: temps,
                kept: case.extras(device).kept,
                positions,
                chunk_rows: Some(4),
            };
            let ours = logprobs_head(
                hidden.clone(),
                weight.clone(),
                case.ids(device),
                extras.clone(),
                &cfg,
            )
            .unwrap();
            let g = loss_on(ours.clone(), &case, device).backward();
            let x = hidden
                .clone()
                .matmul(weight.clone().transpose().unsqueeze::<3>());
            let theirs = logprobs(x, case.ids(device), extras, &cfg).unwrap();
            let t = loss_on(theirs.clone(), &case, device).backward();
            let what = format!("{name} {positions:?} {cfg:?}");
            close(
                &format!("{what}: logprobs"),
                &values(ours.logprobs),
                &values(theirs.logprobs),
            );
            close(
                &format!("{what}: entropy"),
                &values(ours.entropy),
                &values(theirs.entropy),
            );
            close(
                &format!("{what}: lse"),
                &values(ours.lse),
                &values(theirs.lse),
            );
            close(
                &format!("{what}: ∂L/∂hidden"),
                &values(hidden.grad(&g).unwrap()),
                &values(hidden.grad(&t).unwrap()),
            );
            close(
                &format!("{what}: ∂L/∂W"),
                &values(weight.grad(&g).unwrap()),
                &values(weight.grad(&t).unwrap()),
            );
        }
    }
}
