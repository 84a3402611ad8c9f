//! How far the reference's ∂L/∂logits itself moves under the errors that the kernels'
//! f32 arithmetic makes before the gradient: the row's slope G and its probabilities
//! are functions of an f32 log-prob and of f32 products, so where G's terms cancel (a
//! k3 KL term 1 − e^(ref − logp) near ref = logp, DRO's −A + β_D·d, −A against a KL
//! term) its error is not a part of G, and moves every element of its row with it.

use super::super::{policy_loss_with, row_stats, softmax, Batch, LossOutput};
use crate::config::LossConfig;

/// The rounding of G's terms taken as a relative error of each coefficient: a term is
/// a product and an exp or two (a few u each), u = 2^-24; 8u covers them.
pub const COEF_ROUNDING: f64 = 8.0 / (1u64 << 24) as f64;

/// The log-prob error of a row whose logits and lse reach `scale` = max(|z|, |lse|):
/// the lse's f32 error, which the suite holds to this (its `tolerance`; measured
/// ≤ 5e-6 at V = 151936 and |z| ≤ 15): the rounding of z − lse grows with their size.
pub fn logp_err(scale: f64) -> f64 {
    2e-5 + 1e-6 * scale
}

/// Each element's move, the larger of: every row's log-prob off by ±[`logp_err`] (the
/// old, ref and rollout log-probs shifted the other way in its place: the loss reads
/// the log-prob through its differences with them; where a clip bound lies within
/// that error, either side is right); the advantages against the KL, entropy and DRO
/// coefficients off by ±[`COEF_ROUNDING`] in opposite directions (the rounding of G's
/// terms, in full where they cancel); plus the probabilities' relative error
/// ([`logp_err`], the error of z − lse) and the coefficients' rounding of the terms
/// each element is made of (`parts`), which cancel where the element is small.
pub fn grad_sensitivity(
    cfg: &LossConfig,
    b: &Batch<'_>,
    rollout_logp: Option<&[f64]>,
) -> crate::Result<Vec<f64>> {
    let base = policy_loss_with(cfg, b, rollout_logp)?;
    let scale = row_scales(cfg, b);
    let mut out = vec![0.0f64; base.grad.len()];
    for sign in [1.0, -1.0] {
        let err: Vec<f64> = scale.iter().map(|&s| sign * logp_err(s)).collect();
        let shift = |v: &[f64]| v.iter().zip(&err).map(|(x, e)| x - e).collect::<Vec<_>>();
        let (old, refp) = (b.old_logp.map(shift), b.ref_logp.map(shift));
        let roll = rollout_logp.map(shift);
        let batch = Batch {
            old_logp: old.as_deref(),
            ref_logp: refp.as_deref(),
            ..*b
        };
        widen(
            &mut out,
            &base,
            &policy_loss_with(cfg, &batch, roll.as_deref())?,
        );
        let k = 1.0 + sign * COEF_ROUNDING;
        let adv: Vec<f64> = b.advantages.iter().map(|a| a * k).collect();
        let other = |c: f32| (c as f64 * (2.0 - k)) as f32;
        let rounded = LossConfig {
            kl_coef: other(cfg.kl_coef),
            entropy_coeff: other(cfg.entropy_coeff),
            dro_beta: cfg.dro_beta.map(other),
            ..*cfg
        };
        let batch = Batch {
            advantages: &adv,
            ..*b
        };
        widen(
            &mut out,
            &base,
            &policy_loss_with(&rounded, &batch, rollout_logp)?,
        );
    }
    let v = b.vocab.max(1);
    for r in 0..b.rows() {
        let parts = parts(cfg, b, &base, r);
        for (o, [p_part, all]) in out[r * v..(r + 1) * v].iter_mut().zip(parts) {
            *o += finite_or_zero(logp_err(scale[r]) * p_part + COEF_ROUNDING * all);
        }
    }
    Ok(out)
}

/// Per element of row `r`, the magnitudes of the kernels' terms `at_target·1[v = y]`
/// and `p_v·(c0 + c1x·x_v)` (`G/τ`, `w·γ/τ` the reference's `slope`, `entropy_slope`):
/// `[p_v·(|G/τ| + |wγ/τ|·|z_v − μ|), |G/τ|·(1[v = y] + p_v) + |wγ/τ|·p_v·(|z_v| + |μ|)]`,
/// what the probability's relative error and the coefficients' rounding scale. Summed
/// as magnitudes, not as the cancelling sum g_v: the target's 1 − p_y, and G·p_v
/// against γ·p_v·(z_v − μ), leave those errors whole.
fn parts(cfg: &LossConfig, b: &Batch<'_>, base: &LossOutput, r: usize) -> Vec<[f64; 2]> {
    let (tau, v) = (cfg.temperature as f64, b.vocab.max(1));
    let (s, e) = (base.slope[r].abs(), base.entropy_slope[r].abs());
    let row = &b.logits[r * v..(r + 1) * v];
    if s == 0.0 && e == 0.0 {
        return vec![[0.0; 2]; v];
    }
    let p = softmax(row, tau);
    let mu: f64 = row
        .iter()
        .zip(&p)
        .filter(|(_, &p)| p > 0.0)
        .map(|(x, p)| p * x / tau)
        .sum();
    let y = b.targets[r] as usize;
    row.iter()
        .zip(&p)
        .enumerate()
        .map(|(j, (x, &p))| {
            let z = x / tau;
            let ent = if p > 0.0 { e * p } else { 0.0 };
            [
                s * p + ent * (z - mu).abs(),
                s * (f64::from(j == y) + p) + ent * (z.abs() + mu.abs()),
            ]
        })
        .collect()
}

/// max(|z|, |lse|) of each row, over its finite values.
fn row_scales(cfg: &LossConfig, b: &Batch<'_>) -> Vec<f64> {
    let tau = cfg.temperature as f64;
    let v = b.vocab.max(1);
    (0..b.rows())
        .map(|r| {
            let row = &b.logits[r * v..(r + 1) * v];
            let lse = row_stats(row, 0, tau).lse;
            row.iter()
                .map(|x| x / tau)
                .chain([lse])
                .filter(|z| z.is_finite())
                .fold(0.0f64, |m, z| m.max(z.abs()))
        })
        .collect()
}

/// `out` widened to each element's move from `base` to `moved`.
fn widen(out: &mut [f64], base: &LossOutput, moved: &LossOutput) {
    for (o, (m, g)) in out.iter_mut().zip(moved.grad.iter().zip(&base.grad)) {
        *o = o.max(finite_or_zero((m - g).abs()));
    }
}

/// A non-finite move (a bad row) widens nothing.
fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}
