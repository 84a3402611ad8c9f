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
    // a NaN in the reference where SPEC makes one: only a NaN matches it
    let mut want_nan = want.clone();
    want_nan[3] = f64::NAN;
    let mut got = f32s(&want);
    assert!(logits_grad(&got, &want_nan, Format::F32).is_err());
    got[3] = f32::NAN;
    assert!(logits_grad(&got, &want_nan, Format::F32).is_ok());
    want_nan[3] = f64::INFINITY;
    assert!(logits_grad(&got, &want_nan, Format::F32).is_err());
    got[3] = f32::INFINITY;
    assert!(logits_grad(&got, &want_nan, Format::F32).is_ok());
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
    assert_eq!(t.plus(t16).rel, 2.0 * F32_REL + 1.0 / 128.0);
}
