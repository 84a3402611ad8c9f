//! The CPU reference itself, on cases with closed forms, so that the GPU tests compare
//! against something known to be right.

use wgpu_policy_loss::reference::{row_stats, row_stats_batch};

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + b.abs())
}

#[test]
fn uniform_row() {
    for v in [1usize, 2, 7, 151936] {
        let r = row_stats(&vec![3.25; v], v / 2, 1.0);
        let ln_v = (v as f64).ln();
        assert!(near(r.lse, 3.25 + ln_v), "{r:?}");
        assert!(near(r.logp, -ln_v), "{r:?}");
        assert!(near(r.entropy, ln_v), "{r:?}");
    }
}

#[test]
fn two_tokens_with_temperature() {
    // p = sigmoid((a - b)/τ)
    let (a, b, tau) = (2.0f64, -1.0f64, 1.5f64);
    let r = row_stats(&[a, b], 0, tau);
    let p = 1.0 / (1.0 + (-(a - b) / tau).exp());
    assert!(near(r.logp, p.ln()));
    assert!(near(r.entropy, -(p * p.ln() + (1.0 - p) * (1.0 - p).ln())));
    assert!(near(r.lse, ((a / tau).exp() + (b / tau).exp()).ln()));
}

#[test]
fn huge_logits_do_not_overflow() {
    let r = row_stats(&[1e4, 1e4, -1e4], 2, 1.0);
    assert!(near(r.lse, 1e4 + 2f64.ln()));
    assert!(near(r.entropy, 2f64.ln()));
    assert!(near(r.logp, -2e4 - 2f64.ln()));
}

#[test]
fn non_finite_entries() {
    let ninf = f64::NEG_INFINITY;
    let r = row_stats(&[ninf, 0.0, 0.0, ninf], 1, 1.0);
    assert!(near(r.lse, 2f64.ln()) && near(r.entropy, 2f64.ln()) && near(r.logp, -(2f64.ln())));
    assert_eq!(row_stats(&[ninf, 0.0], 0, 1.0).logp, ninf);
    let all_ninf = row_stats(&[ninf; 4], 0, 1.0);
    assert!(all_ninf.lse == ninf && all_ninf.logp.is_nan() && all_ninf.entropy.is_nan());
    let nan = row_stats(&[0.0, f64::NAN], 0, 1.0);
    assert!(nan.lse.is_nan() && nan.logp.is_nan() && nan.entropy.is_nan());
    let inf = row_stats(&[f64::INFINITY, 1.0, f64::INFINITY], 1, 1.0);
    assert!(inf.lse == f64::INFINITY && inf.logp == ninf && near(inf.entropy, 2f64.ln()));
}

#[test]
fn batch_matches_rows() {
    let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
    let b = row_stats_batch(&x, 4, &[0, 3, 2], 0.5);
    for (r, s) in b.iter().enumerate() {
        let row: Vec<f64> = x[r * 4..r * 4 + 4].iter().map(|&v| v as f64).collect();
        assert_eq!(*s, row_stats(&row, [0, 3, 2][r], 0.5));
    }
}
