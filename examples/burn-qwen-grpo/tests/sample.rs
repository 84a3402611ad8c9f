//! The rollout's sampler against top-p computed on the host in f64: the kept set of
//! every row (ties at the edge kept or dropped together), the token drawn inside it,
//! and its log-prob under the set.

#[path = "qwen/common.rs"]
#[allow(dead_code)]
mod common;

use burn::tensor::{Tensor, TensorData};
use burn_qwen_grpo::sample::{csr, sample_top_p};
use common::devices;

/// The kept set of `z` (logits / τ) under top-p `p`, by the rule itself: a token stays
/// when the mass of the strictly more probable ones is below p. `None` where some
/// token's mass above lies within `margin` of p (f32 may decide it either way).
fn host_kept(z: &[f64], p: f64, margin: f64) -> Option<(Vec<u32>, Vec<f64>)> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    let prob: Vec<f64> = e.iter().map(|x| x / s).collect();
    let mut kept = Vec::new();
    for (v, &pv) in prob.iter().enumerate() {
        let above: f64 = prob.iter().filter(|&&pu| pu > pv).sum();
        if (above - p).abs() < margin {
            return None;
        }
        if above < p {
            kept.push(v as u32);
        }
    }
    Some((kept, prob))
}

#[test]
fn the_draw_keeps_the_top_p_set_and_scores_the_token_under_it() {
    for (adapter, device) in devices() {
        draws_on(adapter, device);
    }
}

fn draws_on(adapter: &str, device: &burn::tensor::Device) {
    let (rows, v) = (24, 13);
    // small integers: ties at every level, so that sets end inside a tie group
    let logits: Vec<f32> = (0..rows * v)
        .map(|i| ((i * 7 + i / v * 3) % 5) as f32)
        .collect();
    let uniforms: Vec<f32> = (0..rows).map(|r| (r as f32 * 0.37) % 1.0).collect();
    let mut compared = 0;
    for (temperature, top_p) in [
        (1.0f32, 0.3f32),
        (1.0, 0.6),
        (0.7, 0.9),
        (1.3, 0.95),
        (1.0, 1.0),
    ] {
        let t = Tensor::<2>::from_data(TensorData::new(logits.clone(), [rows, v]), device);
        let draw = sample_top_p(t, temperature, top_p, &uniforms);
        for r in 0..rows {
            let z: Vec<f64> = logits[r * v..(r + 1) * v]
                .iter()
                .map(|&x| x as f64 / temperature as f64)
                .collect();
            let Some((want, prob)) = host_kept(&z, top_p as f64, 1e-5) else {
                continue;
            };
            let mut got = draw.kept[r].clone();
            got.sort_unstable();
            assert_eq!(
                got, want,
                "{adapter}: row {r}, τ {temperature}, top-p {top_p}: kept set"
            );
            let y = draw.tokens[r];
            assert!(
                want.contains(&y),
                "{adapter}: row {r}: token {y} outside its kept set"
            );
            let mass: f64 = want.iter().map(|&u| prob[u as usize]).sum();
            let lp = (prob[y as usize] / mass).ln();
            let got_lp = draw.logprobs[r] as f64;
            assert!(
                (got_lp - lp).abs() <= 1e-5 * (1.0 + lp.abs()),
                "{adapter}: row {r}: log-prob {got_lp}, the host's {lp}"
            );
            compared += 1;
        }
        let (offsets, ids) = csr(&draw.kept);
        assert_eq!(offsets.len(), rows + 1);
        assert_eq!(*offsets.last().unwrap() as usize, ids.len());
    }
    assert!(
        compared > 60,
        "only {compared} rows clear of the edge were compared"
    );
}

/// A draw with u = 0 takes the most probable token, and u just below 1 the least
/// probable kept one: the draw walks the kept set in order of probability.
#[test]
fn the_uniform_walks_the_kept_set_in_order() {
    for (_, device) in devices() {
        let row = [0.5f32, 3.0, -1.0, 2.0, 1.0];
        let t = Tensor::<2>::from_data(TensorData::new([row, row].concat(), [2, 5]), device);
        let draw = sample_top_p(t, 1.0, 0.95, &[0.0, 0.999_999]);
        assert_eq!(draw.tokens[0], 1, "u = 0 takes the most probable token");
        let last = *draw.kept[1].last().expect("a kept token");
        assert_eq!(
            draw.tokens[1], last,
            "u → 1 takes the least probable kept token"
        );
    }
}
