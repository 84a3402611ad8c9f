//! The per-token terms (docs/MATH.md, "The per-token loss", "Policy modes of 2025" and
//! "The KL term").

use super::batch::Batch;
use super::sequence::{log_ratio, vespo_phi, SeqRow};
use super::RowStats;
use crate::config::{ImportanceSamplingLevel, KlEstimator, LossConfig, PolicyLossMode};

/// The per-token policy term: the loss `l`, `g = ∂l/∂logp`, and the flags of the two
/// clip metrics: `clipped` counts in `pg_clipfrac` (the clipped term chosen, `l2 > l1`,
/// or the mode's own rule) and `dual_clipped` in `pg_clipfrac_lower` (the dual clip
/// active, `delta`'s cap, or the mode's own rule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyTerm {
    /// The policy term `l_t`.
    pub l: f64,
    /// Its slope `g_t = ∂l_t/∂logp_t`.
    pub g: f64,
    /// Counts in `pg_clipfrac`.
    pub clipped: bool,
    /// Counts in `pg_clipfrac_lower`.
    pub dual_clipped: bool,
}

/// The clipped objective of docs/MATH.md#policy-modes-of-2025 for ratio `r`
/// (`ppo_clip`, and `gspo` with the sequence ratio), with dual-clip or TRL's two-sided
/// clip `delta` where configured.
pub fn clipped_term(cfg: &LossConfig, a: f64, r: f64) -> PolicyTerm {
    clip_parts(cfg, a, r).0
}

/// [`clipped_term`], and whether the selected term moves with the ratio (`g = −A·r`):
/// the sequence level's gradient through the mean needs the decision, not `g`.
fn clip_parts(cfg: &LossConfig, a: f64, r: f64) -> (PolicyTerm, bool) {
    if let Some(delta) = cfg.delta {
        return two_sided(cfg, a, r, delta as f64);
    }
    let lo = 1.0 - cfg.clip_ratio_low as f64;
    let hi = 1.0 + cfg.clip_ratio_high as f64;
    let l1 = -a * r;
    let l2 = -a * r.clamp(lo, hi);
    let clipped = l2 > l1;
    let mut l = l1.max(l2);
    let mut dual = false;
    if let Some(c) = cfg.clip_ratio_c {
        let cap = -a * c as f64;
        if a < 0.0 && l > cap {
            l = cap;
            dual = true;
        }
    }
    let moves = !(clipped || dual);
    let term = PolicyTerm {
        l,
        g: if moves { -a * r } else { 0.0 },
        clipped,
        dual_clipped: dual,
    };
    (term, moves)
}

/// TRL's two-sided clip (INTELLECT-2): `l = max(−A·min(r, δ), −A·clip(r, lo, hi))`;
/// the first term wins ties. A NaN ratio stays NaN (f64's min would drop it).
fn two_sided(cfg: &LossConfig, a: f64, r: f64, delta: f64) -> (PolicyTerm, bool) {
    let lo = 1.0 - cfg.clip_ratio_low as f64;
    let hi = 1.0 + cfg.clip_ratio_high as f64;
    let capped = if r.is_nan() { r } else { r.min(delta) };
    let l1 = -a * capped;
    let l2 = -a * r.clamp(lo, hi);
    let first = l1 >= l2;
    let moves = match first {
        true => r <= delta,
        false => lo <= r && r <= hi,
    };
    let term = PolicyTerm {
        l: if first { l1 } else { l2 },
        g: if moves { -a * r } else { 0.0 },
        clipped: l2 > -a * r,
        dual_clipped: first && r > delta,
    };
    (term, moves)
}

/// The KL estimator and its derivative with respect to logp; a straight-through
/// estimator (verl's trailing `+`) has its base's value and `k2`'s gradient.
pub fn kl_term(est: KlEstimator, logp: f64, ref_logp: f64) -> (f64, f64) {
    let (value, grad) = kl_base(est.value_estimator(), logp, ref_logp);
    match est.straight_through() {
        true => (value, logp - ref_logp),
        false => (value, grad),
    }
}

fn kl_base(est: KlEstimator, logp: f64, ref_logp: f64) -> (f64, f64) {
    let delta = ref_logp - logp;
    match est {
        KlEstimator::Abs => ((logp - ref_logp).abs(), sign(logp - ref_logp)),
        KlEstimator::K1 => (logp - ref_logp, 1.0),
        KlEstimator::K2 => (0.5 * delta * delta, logp - ref_logp),
        KlEstimator::K3 => {
            // (f64::clamp keeps a NaN; a NaN is no active clamp, it stays NaN)
            let d = delta.clamp(-20.0, 20.0);
            let kl = d.exp() - d - 1.0;
            let klc = kl.clamp(-10.0, 10.0);
            let active = delta.abs() > 20.0 || kl.abs() > 10.0;
            (klc, if active { 0.0 } else { 1.0 - delta.exp() })
        }
        KlEstimator::K1Plus | KlEstimator::K3Plus | KlEstimator::AbsPlus => {
            unreachable!("kl_term passes the value estimator")
        }
    }
}

/// The PPO ratio of row `r` from its log-prob, and whether its ±20 clamp is active
/// (1 without old log-probs: on-policy).
pub(super) fn ratio(b: &Batch<'_>, stats: &[RowStats], r: usize) -> (f64, bool) {
    match b.old_logp {
        Some(old) => {
            let d = stats[r].logp - old[r];
            (d.clamp(-20.0, 20.0).exp(), d.abs() > 20.0)
        }
        None => (1.0, false),
    }
}

/// What the policy term of a row reads beyond its own inputs: its sequence's
/// quantities, and whether the covariance selection chose it.
pub(super) struct RowChoice {
    pub seq: SeqRow,
    pub selected: bool,
}

/// A row's policy term, and `h = ∂l/∂s_b` where the gradient goes through the mean of
/// the sequence ratio instead (TRL's sequence level: `g` is then 0).
#[derive(Clone, Copy, Debug)]
pub(super) struct Token {
    pub term: PolicyTerm,
    pub h: f64,
}

fn plain(l: f64, g: f64) -> PolicyTerm {
    PolicyTerm {
        l,
        g,
        clipped: false,
        dual_clipped: false,
    }
}

/// The policy term `l_t` of row `r` and its `∂l/∂logp` (docs/MATH.md, "The per-token
/// loss", "Policy modes of 2025", "Policy modes of 2026" and "Ratio options").
pub(super) fn token_term(
    cfg: &LossConfig,
    b: &Batch<'_>,
    stats: &[RowStats],
    r: usize,
    choice: RowChoice,
) -> Token {
    let a = b.advantage(r);
    // TRL's sequence level: s_b replaces r_t in every value and decision
    let seq_level = cfg.importance_sampling_level == ImportanceSamplingLevel::Sequence;
    let (rt, clamped) = match seq_level {
        true => (choice.seq.ratio, choice.seq.clamped),
        false => ratio(b, stats, r),
    };
    let term = match cfg.mode {
        PolicyLossMode::Reinforce | PolicyLossMode::Gpg => plain(-a * stats[r].logp, -a),
        PolicyLossMode::PpoClip => {
            let (t, moves) = clip_parts(cfg, a, rt);
            if seq_level {
                let h = if moves { -a } else { 0.0 };
                return Token {
                    term: PolicyTerm { g: 0.0, ..t },
                    h,
                };
            }
            t
        }
        PolicyLossMode::Gspo => clipped_term(cfg, a, choice.seq.ratio),
        PolicyLossMode::Cispo => {
            let lo = 1.0 - cfg.clip_ratio_low as f64;
            let c = rt.clamp(lo, 1.0 + cfg.clip_ratio_high as f64);
            PolicyTerm {
                clipped: c != rt,
                ..plain(-c * a * stats[r].logp, -c * a)
            }
        }
        PolicyLossMode::Sapo => return sapo_term(cfg, a, rt, clamped, seq_level),
        PolicyLossMode::ClipCov => {
            let undual = LossConfig {
                clip_ratio_c: None,
                ..*cfg
            };
            let t = clipped_term(&undual, a, rt);
            match choice.selected {
                true => PolicyTerm {
                    l: 0.0,
                    g: 0.0,
                    ..t
                },
                false => t,
            }
        }
        PolicyLossMode::KlCov => {
            let mut t = plain(-a * rt, -a * rt);
            if choice.selected {
                let d = b.old_logp.map_or(0.0, |old| stats[r].logp - old[r]);
                let kappa = cfg.ppo_kl_coef as f64;
                t.l += kappa * d.abs();
                t.g += kappa * sign(d);
            }
            t
        }
        _ => term_2026(cfg, b, stats, r, choice.seq),
    };
    Token { term, h: 0.0 }
}

/// SAPO's soft gate `σ(τ_A·(ρ − 1))`; at the sequence level its slope goes through
/// the mean (`h`), at the token level through `r_t` (0 where the ±20 clamp is active).
fn sapo_term(cfg: &LossConfig, a: f64, rho: f64, clamped: bool, seq_level: bool) -> Token {
    let t = if a > 0.0 { cfg.tau_pos } else { cfg.tau_neg } as f64;
    let sig = 1.0 / (1.0 + (-t * (rho - 1.0)).exp());
    let l = -(4.0 / t) * sig * a;
    match (seq_level, clamped) {
        (true, _) => Token {
            term: plain(l, 0.0),
            h: -4.0 * sig * (1.0 - sig) * a,
        },
        (false, true) => Token {
            term: plain(l, 0.0),
            h: 0.0,
        },
        (false, false) => Token {
            term: plain(l, -4.0 * sig * (1.0 - sig) * rho * a),
            h: 0.0,
        },
    }
}

/// The modes of docs/MATH.md#policy-modes-of-2026 (`geo_mean`, `dppo_tv`, `dppo_kl`,
/// `dro`, `vespo`).
fn term_2026(
    cfg: &LossConfig,
    b: &Batch<'_>,
    stats: &[RowStats],
    r: usize,
    seq: SeqRow,
) -> PolicyTerm {
    let (a, logp) = (b.advantage(r), stats[r].logp);
    let d = log_ratio(b, stats, r);
    match cfg.mode {
        PolicyLossMode::GeoMean => geo_term(cfg, a, d, seq),
        PolicyLossMode::DppoTv | PolicyLossMode::DppoKl => dppo_term(cfg, b, stats, r),
        PolicyLossMode::Dro => {
            // d unclamped; validate() has made sure β_D is given
            let beta = cfg.dro_beta.map_or(0.0, f64::from);
            plain(-(a * logp - 0.5 * beta * d * d), -a + beta * d)
        }
        PolicyLossMode::Vespo => {
            // φ is detached: REINFORCE with the advantage φ·A
            let phi = vespo_phi(cfg, a, seq.vespo_l);
            plain(-phi * a * logp, -phi * a)
        }
        _ => unreachable!("token_term handles the modes before 2026"),
    }
}

/// GMPO's `l = −Ā_b·ρ_b` with the gradient where the token's `κ = d` (unclipped) and
/// `A ≠ 0`; the metrics count `d` outside `[−ε_low, ε_high]` by the sign of A.
fn geo_term(cfg: &LossConfig, a: f64, d: f64, seq: SeqRow) -> PolicyTerm {
    let (lo, hi) = (cfg.clip_ratio_low as f64, cfg.clip_ratio_high as f64);
    let l = -seq.geo_adv * seq.geo_rho;
    let unclipped = (a > 0.0 && d <= hi) || (a < 0.0 && d >= -lo);
    let outside = d < -lo || d > hi;
    PolicyTerm {
        l,
        g: if unclipped { l } else { 0.0 },
        clipped: a > 0.0 && outside,
        dual_clipped: a < 0.0 && outside,
    }
}

/// DPPO-Binary's `−sg(c·v)·A·logp`: `v` cuts tokens whose probability moved past
/// `δ_low` / `δ_high` (TV, or a binary KL), `c = min(r, C)` with `C` 3.0 unless given.
/// Without old log-probs `v = c = 1` (REINFORCE). `A = 0` takes the `A ≤ 0` branch.
fn dppo_term(cfg: &LossConfig, b: &Batch<'_>, stats: &[RowStats], r: usize) -> PolicyTerm {
    let (a, logp) = (b.advantage(r), stats[r].logp);
    let Some(old) = b.old_logp.map(|o| o[r]) else {
        return plain(-a * logp, -a);
    };
    let (p, p_old) = (logp.exp(), old.exp());
    let (dl, dh) = (cfg.clip_ratio_low as f64, cfg.clip_ratio_high as f64);
    let v = if cfg.mode == PolicyLossMode::DppoTv {
        match a > 0.0 {
            true => p - p_old <= dh,
            false => p - p_old >= -dl,
        }
    } else {
        let div =
            p_old * (old - logp) + (1.0 - p_old) * ((1.0 - p_old + 1e-8) / (1.0 - p + 1e-8)).ln();
        match a > 0.0 {
            true => div <= dh || p <= p_old,
            false => div <= dl || p >= p_old,
        }
    };
    let c_max = cfg.clip_ratio_c.map_or(3.0, f64::from);
    let rt = ratio(b, stats, r).0;
    // a NaN ratio stays NaN (f64's min would give C)
    let c = if rt.is_nan() { rt } else { rt.min(c_max) };
    let cv = if v { c } else { 0.0 };
    PolicyTerm {
        l: -cv * a * logp,
        g: -cv * a,
        clipped: !v,
        dual_clipped: v && rt > c_max,
    }
}

/// −1, 0 or 1 (0 at ±0).
fn sign(d: f64) -> f64 {
    if d > 0.0 {
        1.0
    } else if d < 0.0 {
        -1.0
    } else {
        0.0
    }
}
