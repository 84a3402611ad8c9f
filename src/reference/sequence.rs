//! The per-sequence quantities of docs/MATH.md, "Policy modes of 2026", "Ratio options"
//! and "The off-policy sequence mask": the sequence ratio `s_b` (GSPO, TRL's sequence
//! level), GMPO's `ρ_b`, `Ā_b` and `q_b`, VESPO's `L_b` and `φ`, the off-policy mask's
//! `κ̄_b`, and the gradient addends that reach every row of a sequence through a mean
//! over it.

use super::batch::Batch;
use super::select::RolloutWeights;
use super::RowStats;
use crate::config::{ImportanceSamplingLevel, LossConfig, PolicyLossMode};

/// One value per sequence of the batch (empty sequences included).
pub(super) struct Sequences {
    /// `n_b = Σ_t m_t` over the masked-in rows.
    pub n: Vec<f64>,
    /// `s_b` where the policy ratio is per sequence (`cfg.sequence_ratio()`), else 1.
    pub ratio: Vec<f64>,
    /// Whether `s_b`'s ±20 clamp is active (its derivative is then 0).
    pub clamped: Vec<bool>,
    /// GMPO's `ρ_b`, `Ā_b` and rollout weight `q_b` (1 where unused).
    pub geo_rho: Vec<f64>,
    pub geo_adv: Vec<f64>,
    pub geo_q: Vec<f64>,
    /// VESPO's `L_b` (0 in other modes).
    pub vespo_l: Vec<f64>,
    /// The off-policy mask's `κ̄_b` (0 without the mask or without σ).
    pub off_policy: Vec<f64>,
}

/// What one row reads of its sequence.
#[derive(Clone, Copy, Debug)]
pub(super) struct SeqRow {
    pub n: f64,
    pub ratio: f64,
    pub clamped: bool,
    pub geo_rho: f64,
    pub geo_adv: f64,
    pub geo_q: f64,
    pub vespo_l: f64,
    pub off_policy: f64,
}

impl Sequences {
    pub fn row(&self, s: usize) -> SeqRow {
        SeqRow {
            n: self.n[s],
            ratio: self.ratio[s],
            clamped: self.clamped[s],
            geo_rho: self.geo_rho[s],
            geo_adv: self.geo_adv[s],
            geo_q: self.geo_q[s],
            vespo_l: self.vespo_l[s],
            off_policy: self.off_policy[s],
        }
    }
}

/// `d_t = logp_t − old_t`, unclamped; 0 without old log-probs (`old := sg(logp)`, so
/// the value is 0 while the derivative stays 1).
pub(super) fn log_ratio(b: &Batch<'_>, stats: &[RowStats], r: usize) -> f64 {
    b.old_logp.map_or(0.0, |old| stats[r].logp - old[r])
}

/// Every sequence's quantities, from the masked-in rows. `rollout_logp` is the
/// off-policy mask's σ when given (whether or not the rollout correction is on).
pub(super) fn sequences(
    cfg: &LossConfig,
    b: &Batch<'_>,
    stats: &[RowStats],
    masked_in: &[usize],
    rollout: &RolloutWeights,
    rollout_logp: Option<&[f64]>,
) -> Sequences {
    let seqs = b.seqs();
    let mut n = vec![0.0f64; seqs];
    for &r in masked_in {
        n[b.seq_of(r)] += b.mask[r];
    }
    let sum = |x: &dyn Fn(usize) -> f64| seq_sum(b, masked_in, x);
    let mean_or_0 = |s: f64, n: f64| if n > 0.0 { s / n } else { 0.0 };
    let (mut ratio, mut clamped) = (vec![1.0f64; seqs], vec![false; seqs]);
    if cfg.sequence_ratio() {
        let d = sum(&|r| log_ratio(b, stats, r));
        for s in 0..seqs {
            let mean = mean_or_0(d[s], n[s]);
            ratio[s] = mean.clamp(-20.0, 20.0).exp();
            clamped[s] = mean.abs() > 20.0;
        }
    }
    let (mut geo_rho, mut geo_adv, mut geo_q) = (ones(seqs), ones(seqs), ones(seqs));
    if cfg.mode == PolicyLossMode::GeoMean {
        let k = sum(&|r| kappa(cfg, b.advantage(r), log_ratio(b, stats, r)));
        let a = sum(&|r| b.advantage(r));
        // verl's geometric mean of the rollout weights (ln of q + 1e-10: a masked q of 0)
        let lq = sum(&|r| (rollout.q[r] + 1e-10).ln());
        for s in 0..seqs {
            geo_rho[s] = mean_or_0(k[s], n[s]).exp();
            geo_adv[s] = mean_or_0(a[s], n[s]);
            if cfg.rollout_correction.is_some() {
                geo_q[s] = mean_or_0(lq[s], n[s]).exp();
            }
        }
    }
    let vespo_l = match cfg.mode {
        PolicyLossMode::Vespo => vespo_log_weights(cfg, b, stats, masked_in, rollout),
        _ => vec![0.0; seqs],
    };
    let mut off_policy = vec![0.0f64; seqs];
    if let (Some(_), Some(sigma)) = (cfg.off_policy_mask_threshold, rollout_logp.or(b.old_logp)) {
        let k = sum(&|r| sigma[r] - stats[r].logp);
        for s in 0..seqs {
            off_policy[s] = k[s] / n[s].max(1.0);
        }
    }
    Sequences {
        n,
        ratio,
        clamped,
        geo_rho,
        geo_adv,
        geo_q,
        vespo_l,
        off_policy,
    }
}

fn ones(n: usize) -> Vec<f64> {
    vec![1.0; n]
}

/// `Σ_t m_t·x(t)` over each sequence's masked-in rows.
fn seq_sum(b: &Batch<'_>, masked_in: &[usize], x: &dyn Fn(usize) -> f64) -> Vec<f64> {
    let mut s = vec![0.0f64; b.seqs()];
    for &r in masked_in {
        s[b.seq_of(r)] += b.mask[r] * x(r);
    }
    s
}

/// VESPO's `L_b = clamp(Σ m·clamp(d, ±20) [+ Σ m·clamp(ln q, ln 1e-8, 20)], ln 1e-8,
/// 20)`: the rollout weights enter the log-weight (TRL's token-level correction) instead
/// of multiplying the policy term. f64's clamp keeps a NaN.
fn vespo_log_weights(
    cfg: &LossConfig,
    b: &Batch<'_>,
    stats: &[RowStats],
    masked_in: &[usize],
    rollout: &RolloutWeights,
) -> Vec<f64> {
    let lo = 1e-8f64.ln();
    let d = seq_sum(b, masked_in, &|r| log_ratio(b, stats, r).clamp(-20.0, 20.0));
    let q = match cfg.rollout_correction {
        Some(_) => seq_sum(b, masked_in, &|r| rollout.q[r].ln().clamp(lo, 20.0)),
        None => vec![0.0; d.len()],
    };
    d.iter()
        .zip(&q)
        .map(|(d, q)| (d + q).clamp(lo, 20.0))
        .collect()
}

/// GMPO's clipped log-ratio `κ = sgn(A)·min(sgn(A)·d, sgn(A)·clamp(d, −ε_low, ε_high))`:
/// `min(d, ε_high)` for `A > 0`, `max(d, −ε_low)` for `A < 0`, 0 for `A = 0`. A NaN
/// advantage or log-ratio gives NaN (f64's min would drop it), poisoning the sequence.
pub(super) fn kappa(cfg: &LossConfig, a: f64, d: f64) -> f64 {
    if a.is_nan() || d.is_nan() {
        return f64::NAN;
    }
    if a > 0.0 {
        d.min(cfg.clip_ratio_high as f64)
    } else if a < 0.0 {
        d.max(-(cfg.clip_ratio_low as f64))
    } else {
        0.0
    }
}

/// VESPO's gamma weight `φ = exp(λ + k·L − λ·e^L)` with `(k, λ)` of the advantage's
/// sign (`A ≥ 0`: the positive pair) and `λ ≥ 1e-4`; a non-finite φ is 0 (TRL's
/// `nan_to_num`).
pub(super) fn vespo_phi(cfg: &LossConfig, a: f64, l: f64) -> f64 {
    let (k, lambda) = match a >= 0.0 {
        true => (cfg.vespo_k_pos, cfg.vespo_lambda_pos),
        false => (cfg.vespo_k_neg, cfg.vespo_lambda_neg),
    };
    let (k, lambda) = (k as f64, (lambda as f64).max(1e-4));
    let phi = (lambda + k * l - lambda * l.exp()).exp();
    if phi.is_finite() {
        phi
    } else {
        0.0
    }
}

/// The off-policy mask `o = 1[A ≥ 0 or κ̄_b ≤ θ]` (1 without it); a NaN `κ̄_b` makes
/// every row of its sequence NaN, so the NaN is seen rather than masked away.
pub(super) fn off_policy_kept(cfg: &LossConfig, a: f64, kbar: f64) -> f64 {
    match cfg.off_policy_mask_threshold {
        None => 1.0,
        Some(_) if kbar.is_nan() => f64::NAN,
        Some(t) => (a >= 0.0 || kbar <= t as f64) as u8 as f64,
    }
}

/// `vespo_phi_seq_mean`: with per-sequence advantages the mean of `φ_b` over every
/// sequence (an empty one has `L_b = 0`, so φ = 1), with per-row ones the mask-weighted
/// mean over masked-in rows; 0 in other modes and for an empty batch.
pub(super) fn phi_seq_mean(
    cfg: &LossConfig,
    b: &Batch<'_>,
    seqs: &Sequences,
    masked_in: &[usize],
) -> f64 {
    if cfg.mode != PolicyLossMode::Vespo {
        return 0.0;
    }
    if b.advantages.len() != b.rows() {
        let phi = |s: usize| vespo_phi(cfg, b.advantages[s], seqs.vespo_l[s]);
        let n = b.seqs();
        return match n {
            0 => 0.0,
            _ => (0..n).map(phi).sum::<f64>() / n as f64,
        };
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for &r in masked_in {
        let phi = vespo_phi(cfg, b.advantage(r), seqs.vespo_l[b.seq_of(r)]);
        num += b.mask[r] * phi;
        den += b.mask[r];
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

/// Whether the policy term's gradient goes through the mean of `s_b` (TRL's sequence
/// level for `ppo_clip` and `sapo`; `cispo`'s weight is detached, `gspo` keeps verl's
/// per-token form).
pub(super) fn policy_through_mean(cfg: &LossConfig) -> bool {
    cfg.importance_sampling_level == ImportanceSamplingLevel::Sequence
        && matches!(cfg.mode, PolicyLossMode::PpoClip | PolicyLossMode::Sapo)
}

/// Whether the bias-corrected KL term is weighed by `s_b` (gspo or the sequence level).
pub(super) fn kl_through_mean(cfg: &LossConfig) -> bool {
    cfg.bias_corrected_kl() && cfg.sequence_ratio()
}

/// One masked-in row's share of its sequence's addend: `W_t·h_t` (the policy term's
/// `∂/∂s_b`) and `w_t·kl_t` (the bias-corrected KL's).
#[derive(Clone, Copy, Debug)]
pub(super) struct SeqSlope {
    pub row: usize,
    pub policy: f64,
    pub kl: f64,
}

/// The gradient through `s_b = exp(Σ m·d / n_b)`: every masked-in row `u` of sequence
/// b gets `s_b·(m_u / n_b)·Σ_t (W_t·h_t + β·w_t·kl_t)`, 0 where the ±20 clamp is
/// active. A NaN in the sum reaches every row of the sequence, as autograd's would.
pub(super) fn add_sequence_terms(
    cfg: &LossConfig,
    b: &Batch<'_>,
    seqs: &Sequences,
    slopes: &[SeqSlope],
    big_g: &mut [f64],
) {
    let (policy, kl) = (policy_through_mean(cfg), kl_through_mean(cfg));
    if !(policy || kl) {
        return;
    }
    let beta = cfg.kl_coef as f64;
    let mut total = vec![0.0f64; b.seqs()];
    for s in slopes {
        let p = if policy { s.policy } else { 0.0 };
        let k = if kl { beta * s.kl } else { 0.0 };
        total[b.seq_of(s.row)] += p + k;
    }
    for s in slopes {
        let q = b.seq_of(s.row);
        if !seqs.clamped[q] {
            big_g[s.row] += seqs.ratio[q] * (b.mask[s.row] / seqs.n[q]) * total[q];
        }
    }
}
