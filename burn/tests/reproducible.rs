//! Bitwise reproducible: run to run, whatever the batch around a sequence, with or
//! without autodiff, and (run under `--features fusion` after the plain suite) with
//! burn-fusion on.

mod common;

use std::path::PathBuf;

use burn::tensor::FloatDType;
use common::{devices, run, values, Case};
use wgpu_policy_loss_burn::{LossAggMode, LossConfig, PolicyLossMode, Positions};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn cfg(mode: PolicyLossMode) -> LossConfig {
    LossConfig {
        mode,
        loss_agg_mode: LossAggMode::SeqMeanTokenMean,
        kl_coef: 0.05,
        entropy_coeff: 0.01,
        dro_beta: (mode == PolicyLossMode::Dro).then_some(0.3),
        ..LossConfig::default()
    }
}

/// The bits of every result of a few calls on `device`: loss, log-probs, entropies,
/// gradient.
fn fingerprint(device: &burn::tensor::Device) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for (i, mode) in PolicyLossMode::ALL.into_iter().enumerate() {
        let positions = [Positions::Shifted, Positions::Aligned][i % 2];
        let dtype = [FloatDType::F32, FloatDType::BF16][i % 2];
        let case = Case::new(100 + i as u64, (3, 7, 41), positions);
        let (o, _, grad) = run(&case, &cfg(mode), device, dtype);
        out.push(bits(&values(o.loss)));
        out.push(bits(&values(o.logprobs)));
        out.push(bits(&values(o.entropy)));
        out.push(bits(&grad));
    }
    out
}

#[test]
fn the_same_bits_run_to_run() {
    for (name, device) in devices() {
        assert_eq!(fingerprint(device), fingerprint(device), "{name}");
    }
}

/// A sequence's log-probs and entropies do not depend on the sequences beside it.
#[test]
fn the_rows_do_not_depend_on_the_batch() {
    for (name, device) in devices() {
        let whole = Case::new(9, (4, 5, 23), Positions::Shifted);
        let mut half = whole.clone();
        let (r, s, v) = (whole.r(), whole.s, whole.v);
        half.b = 2;
        half.logits.truncate(2 * s * v);
        half.ids.truncate(2 * s);
        half.mask.truncate(2 * r);
        half.advantages.truncate(2);
        half.old.as_mut().unwrap().truncate(2 * r);
        half.refp.as_mut().unwrap().truncate(2 * r);
        let cfg = cfg(PolicyLossMode::PpoClip);
        let (a, _, _) = run(&whole, &cfg, device, FloatDType::F32);
        let (b, _, _) = run(&half, &cfg, device, FloatDType::F32);
        assert_eq!(
            bits(&values(a.logprobs))[..2 * r],
            bits(&values(b.logprobs)),
            "{name}"
        );
        assert_eq!(
            bits(&values(a.entropy))[..2 * r],
            bits(&values(b.entropy)),
            "{name}"
        );
    }
}

/// Without a tracked input the forward computes no gradient, and its results are those
/// of the tracked call.
#[test]
fn untracked_calls_give_the_same_results() {
    for (name, device) in devices() {
        let case = Case::new(21, (2, 6, 17), Positions::Response { prompt_len: 3 });
        let cfg = cfg(PolicyLossMode::Gspo);
        let (tracked, _, _) = run(&case, &cfg, device, FloatDType::F32);
        for d in [device.clone(), device.clone().inner()] {
            let out = common::call(&case, case.logits(&d, FloatDType::F32), &d, &cfg).unwrap();
            assert_eq!(
                bits(&values(out.loss)),
                bits(&values(tracked.loss.clone())),
                "{name}"
            );
            assert_eq!(
                bits(&values(out.logprobs)),
                bits(&values(tracked.logprobs.clone())),
                "{name}"
            );
        }
    }
}

/// The plain suite leaves its fingerprint; the fusion suite (`--features fusion`) run
/// after it with `WGPU_POLICY_LOSS_BURN_COMPARE=1` requires the same bits.
#[test]
fn fusion_gives_the_same_bits() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (mine, other) = match cfg!(feature = "fusion") {
        true => ("burn-bits-fusion.txt", "burn-bits-plain.txt"),
        false => ("burn-bits-plain.txt", "burn-bits-fusion.txt"),
    };
    let text: String = devices()
        .iter()
        .map(|(name, device)| format!("{name}: {:?}\n", fingerprint(device)))
        .collect();
    // whichever build runs first compares something too: the fingerprint made again
    let again: String = devices()
        .iter()
        .map(|(name, device)| format!("{name}: {:?}\n", fingerprint(device)))
        .collect();
    assert!(
        !text.is_empty() && again == text,
        "the fingerprint changed run to run"
    );
    std::fs::write(dir.join(mine), &text).unwrap();
    if std::env::var_os("WGPU_POLICY_LOSS_BURN_COMPARE").is_some() {
        let theirs = std::fs::read_to_string(dir.join(other)).unwrap_or_else(|e| {
            panic!("no {other} to compare with (run the other build first): {e}")
        });
        assert!(theirs == text, "fusion on and off give different bits");
    }
}
