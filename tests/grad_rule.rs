//! The gradient rule (`reference::compare`) has teeth: on a kernel's f32 gradient of two
//! rows of V = 151936, where 99 % of the entries are below 1e-4 of the largest (the old
//! rule, 1e-4·max per element, passed a kernel that zeroed them all), zeroing them fails
//! and a relative error of 1e-3 on them fails, and so does a NaN anywhere.

mod common;

use common::*;
use wgpu_policy_loss::reference::compare::{self, Format, Tolerance};
use wgpu_policy_loss::{DType, KlEstimator, LossAggMode, PolicyLossMode};

const V: u32 = 151_936;

/// How many of `idx` a changed gradient puts out of their bound.
fn out_of_bound(got: &[f32], want: &[f64], idx: &[usize]) -> usize {
    let (t, scale) = (
        Tolerance::logits_grad(Format::F32),
        compare::largest_finite(want),
    );
    idx.iter()
        .filter(|&&i| {
            let err = (got[i] as f64 - want[i]).abs();
            err.is_nan() || err > t.bound(want[i], scale)
        })
        .count()
}

#[test]
fn the_rule_sees_the_small_entries_of_a_large_vocabulary() {
    let case = LossCase::new(6, 1, 2, V);
    let cfg = loss_config(
        PolicyLossMode::PpoClip,
        LossAggMode::TokenMean,
        KlEstimator::K3,
        (1.0, 0.05, 0.01, Some(3.0)),
    );
    let logits = Logits::from_f32(DType::F32, &case.logits);
    let want = case.reference(&cfg, &logits.values(), ALL_INPUTS, false);
    let max = compare::largest_finite(&want.grad);
    let t = Tolerance::logits_grad(Format::F32);
    // the entries the old rule did not see
    let small: Vec<usize> = (0..want.grad.len())
        .filter(|&i| want.grad[i] != 0.0 && want.grad[i].abs() < 1e-4 * max)
        .collect();
    assert!(small.len() * 100 >= 98 * want.grad.len(), "{}", small.len());
    // which of them each change must put out of bound, the kernel's own error (within
    // its bound) notwithstanding: a zeroed entry is out where |g_ref| > bound; one off
    // by 1e-3 where 1e-3·|g_ref| exceeds the bound twice (b·max/(1e-3 − 2a) ≈ 1.9e-5
    // of the largest)
    let bound = |i: usize| t.bound(want.grad[i], max);
    let must_zero = small
        .iter()
        .filter(|&&i| want.grad[i].abs() > bound(i))
        .count();
    let must_off = small
        .iter()
        .filter(|&&i| 0.999e-3 * want.grad[i].abs() > 2.0 * bound(i))
        .count();
    println!(
        "{} entries below 1e-4·max ({:.1} %): {must_zero} must fail zeroed, {must_off} off by 1e-3",
        small.len(),
        100.0 * small.len() as f64 / want.grad.len() as f64
    );
    assert!(must_off > 0 && must_zero * 2 >= small.len());
    for ctx in contexts() {
        let what = name(ctx);
        let got = ctx
            .policy_loss(
                &cfg,
                &case.batch(logits.host(), ALL_INPUTS),
                Some(DType::F32),
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let g = got.grad.unwrap().to_f32();
        let held = compare::logits_grad(&g, &want.grad, Format::F32)
            .unwrap_or_else(|e| panic!("{what}: {e}"));

        let mut zeroed = g.clone();
        let mut off = g.clone();
        for &i in &small {
            zeroed[i] = 0.0;
            off[i] *= 1.0 + 1e-3;
        }
        assert!(compare::logits_grad(&zeroed, &want.grad, Format::F32).is_err());
        assert!(compare::logits_grad(&off, &want.grad, Format::F32).is_err());
        let (z, o) = (
            out_of_bound(&zeroed, &want.grad, &small),
            out_of_bound(&off, &want.grad, &small),
        );
        assert!(
            z >= must_zero,
            "{what}: zeroed, {z} out of bound, want {must_zero}"
        );
        assert!(
            o >= must_off,
            "{what}: 1e-3 off, {o} out of bound, want {must_off}"
        );
        println!(
            "{what}: {} entries, max |g_ref| {max:.3e}; {} below 1e-4·max; the kernel's \
             largest error {:.2} of its bound (bound a·|g| + b·max, a = {:.0e}, b·max = \
             {:.2e}); zeroed, {z} of them out of bound; 1e-3 off, {o}",
            want.grad.len(),
            small.len(),
            held.share(),
            t.rel,
            t.of_scale * max,
        );
        for bad in [f32::NAN, f32::INFINITY] {
            let mut nan = g.clone();
            nan[small[small.len() / 2]] = bad;
            assert!(compare::logits_grad(&nan, &want.grad, Format::F32).is_err());
        }
    }
}
