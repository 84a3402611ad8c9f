//! The dtype loaders (shaders/dtype/*.wgsl), exhaustively: every f16 and bf16 bit
//! pattern goes through the row kernel as a one-element row, whose log-sum-exp is the
//! element itself. So the widening to f32 must be exact — subnormals, ±0, ±inf, NaN —
//! on every adapter and path (native f16 loads and the packed fallback alike).

mod common;

use common::*;
use wgpu_policy_loss::half::{bf16, f16};
use wgpu_policy_loss::HostLogits;

/// `got` is the f32 the device produced for an element whose exact value is `want`.
/// f32 subnormals (bf16 has them too) may be flushed to zero by a GPU's f32 arithmetic.
fn same_value(got: f32, want: f32) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    got == want || (want.is_subnormal() && got == 0.0)
}

fn check_all(ctx: &wgpu_policy_loss::Context, logits: HostLogits<'_>, exact: &[f32]) {
    let rows = exact.len();
    let targets = vec![0u32; rows];
    let got = ctx
        .row_stats(logits, 1, &targets, 1.0)
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    let mut bad = Vec::new();
    for (i, &want) in exact.iter().enumerate() {
        if !same_value(got.lse[i], want) {
            bad.push(format!("#{i:#06x}: {want:e} -> {:e}", got.lse[i]));
        }
        // log p of the only token is 0 and the entropy 0, for every finite value
        if want.is_finite() && (got.logp[i] != 0.0 || got.entropy[i] != 0.0) {
            bad.push(format!(
                "#{i:#06x}: logp {} entropy {}",
                got.logp[i], got.entropy[i]
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} {}: {} of {rows} patterns wrong, first: {:?}",
        name(ctx),
        logits.dtype(),
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

#[test]
fn every_f16_bit_pattern_widens_exactly() {
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let exact: Vec<f32> = all.iter().map(|h| h.to_f32()).collect();
    for ctx in contexts() {
        check_all(ctx, HostLogits::F16(&all), &exact);
    }
}

#[test]
fn every_bf16_bit_pattern_widens_exactly() {
    let all: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let exact: Vec<f32> = all.iter().map(|h| h.to_f32()).collect();
    for ctx in contexts() {
        check_all(ctx, HostLogits::Bf16(&all), &exact);
    }
}

#[test]
fn f32_special_values_pass_through() {
    let mut values = vec![
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        3.3e38,
    ];
    values.extend(random_logits(3, 5000, 1e3));
    for ctx in contexts() {
        check_all(ctx, HostLogits::F32(&values), &values);
    }
}
