//! The rule on made-up data: NaN and ±Inf anywhere fail it, the reference's own
//! non-finite values must be matched, and the bound is what the module's comment says.

use super::*;

/// A softmax-like gradient: one large entry and a tail falling over ten decades.
fn row() -> Vec<f64> {
    let mut g: Vec<f64> = (0..2000)
        .map(|i| -1e-3 * (-(i as f64) / 80.0).exp())
        .collect();
    g[7] = 0.9;
    g
}

fn f32s(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

#[test]
fn the_reference_rounded_to_its_format_holds() {
    let want = row();
    for (format, round) in [
        (Format::F32, f32s(&want)),
        (
            Format::F16,
            want.iter()
                .map(|&v| half::f16::from_f64(v).to_f32())
                .collect(),
        ),
        (
            Format::BF16,
            want.iter()
                .map(|&v| half::bf16::from_f64(v).to_f32())
                .collect(),
        ),
    ] {
        let c = logits_grad(&round, &want, format).unwrap();
        assert_eq!(c.compared, want.len());
        assert!(c.share() <= 1.0, "{format:?}: {c:?}");
    }
}

#[test]
fn nan_or_inf_anywhere_fails() {
    let want = row();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, 7, 1000, 1999] {
            let mut got = f32s(&want);
            got[at] = bad;
            let e = logits_grad(&got, &want, Format::F32).unwrap_err();
            assert!(
                matches!(e, Mismatch::NotFinite(el) if el.index == at),
                "{bad} at {at}: {e:?}"
            );
        }
    }
    // a NaN in the reference where the bad-input rules make one
    // (docs/MATH.md#bad-input): only a NaN matches it
    let mut want_nan = want.clone();
    want_nan[3] = f64::NAN;
    let mut got = f32s(&want);
    assert!(logits_grad(&got, &want_nan, Format::F32).is_err());
    got[3] = f32::NAN;
    assert!(logits_grad(&got, &want_nan, Format::F32).is_ok());
    // its ±Inf by the same, or by a NaN (∞ − ∞ in another order), never by a number
    want_nan[3] = f64::INFINITY;
    assert!(logits_grad(&got, &want_nan, Format::F32).is_ok());
    got[3] = f32::INFINITY;
    assert!(logits_grad(&got, &want_nan, Format::F32).is_ok());
    for wrong in [f32::NEG_INFINITY, 1.0, 0.0] {
        got[3] = wrong;
        assert!(
            logits_grad(&got, &want_nan, Format::F32).is_err(),
            "{wrong}"
        );
    }
    // and a wrong length
    assert!(matches!(
        logits_grad(&got[1..], &want, Format::F32),
        Err(Mismatch::Length { .. })
    ));
}

#[test]
fn the_error_folds_keep_a_nan() {
    assert!(max_err(0.0, f64::NAN).is_nan());
    assert!(max_err(f64::NAN, 1.0).is_nan());
    assert_eq!(max_err(1.0, 2.0), 2.0);
    let errs = [1e-6, f64::NAN, 3e-6];
    assert!(errs.iter().copied().fold(0.0, max_err).is_nan());
    assert_eq!(largest_finite(&[1.0, f64::NAN, -3.0, f64::INFINITY]), 3.0);
}

#[test]
fn the_bound_is_relative_plus_a_share_of_the_largest() {
    let want = row();
    let t = Tolerance::logits_grad(Format::F32);
    let scale = 0.9;
    // an error just inside and just outside at a large, a middle and a tiny entry
    for at in [7, 300, 1500] {
        let bound = t.bound(want[at], scale);
        assert_eq!(bound, F32_REL * want[at].abs() + OF_MAX * scale + t.floor);
        for (k, ok) in [(0.5, true), (2.0, false)] {
            let mut got = want.clone();
            got[at] += k * bound;
            let c = within_scales(&f32s(&got), &want, t, |_| scale);
            // f32 narrowing moves the value by ≤ 2^-24 of it: far from the factor 2
            assert_eq!(c.is_ok(), ok, "entry {at} moved by {k} bounds: {c:?}");
        }
    }
    // a 16-bit gradient adds one ulp of its format
    let t16 = Tolerance::logits_grad(Format::BF16);
    assert_eq!(t16.rel, F32_REL + 1.0 / 128.0);
    assert!((t.plus(t16).rel - (2.0 * F32_REL + 1.0 / 128.0)).abs() < 1e-15);
}

#[test]
fn the_sensitivity_is_how_far_the_gradient_moves_with_the_log_prob() {
    use crate::config::{KlEstimator, LossConfig, PolicyLossMode};
    let x = [0.5, -1.0, 2.0, 0.0, 1.0];
    let batch = |refp: Option<&'static [f64]>| super::super::Batch {
        logits: &x,
        vocab: 5,
        rows_per_seq: 1,
        targets: &[2],
        mask: &[1.0],
        advantages: &[0.7],
        old_logp: None,
        ref_logp: refp,
    };
    let st = super::super::row_stats(&x, 2, 1.0);
    let scale = st.lse.abs().max(2.0);
    // REINFORCE without a KL term: G = −A reads no log-prob
    let plain = LossConfig {
        mode: PolicyLossMode::Reinforce,
        ..LossConfig::default()
    };
    let s = grad_sensitivity(&plain, &batch(None), None).unwrap();
    let out = super::super::policy_loss(&plain, &batch(None)).unwrap();
    let slope = out.slope[0].abs();
    assert!((slope - 0.7).abs() < 1e-12, "G/τ = −A: {slope}");
    for (si, gi) in s.iter().zip(&out.grad) {
        // at least the advantage's rounding, at most every term's errors in full
        let most = (logp_err(scale) + 3.0 * COEF_ROUNDING) * 2.0 * slope;
        assert!(
            *si >= COEF_ROUNDING * gi.abs() && *si <= most,
            "{si} vs {gi}"
        );
    }
    // with k3: ∂G/∂logp = β·e^δ, so the target moves by β·e^δ·logp_err·(1 − p_y) at least
    let kl = LossConfig {
        kl_coef: 0.1,
        kl_loss_type: KlEstimator::K3,
        ..plain
    };
    let b = batch(Some(&[-0.4]));
    let s = grad_sensitivity(&kl, &b, None).unwrap();
    let p_y = st.logp.exp();
    let want = 0.1 * (-0.4 - st.logp).exp() * logp_err(scale) * (1.0 - p_y);
    assert!(s[2] >= 0.99 * want, "{} vs {want}", s[2]);
    // and it widens the bound by itself
    let g = super::super::policy_loss(&kl, &b).unwrap().grad;
    let mut got = f32s(&g);
    got[2] = (g[2] + 0.9 * s[2] + Tolerance::logits_grad(Format::F32).bound(g[2], 0.0)) as f32;
    assert!(logits_grad(&got, &g, Format::F32).is_err());
    assert!(logits_grad_with(&got, &g, Format::F32, &s).is_ok());
}
