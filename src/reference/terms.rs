//! The per-token terms (SPEC "Per token loss", "KL").

use super::batch::Batch;
use super::RowStats;
use crate::config::{KlEstimator, LossConfig, PolicyLossMode};

/// The per-token policy term: the loss `l`, `g = ∂l/∂logp`, and whether the clipped
/// term was chosen (`l2 > l1`) or the dual clip was active.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyTerm {
    pub l: f64,
    pub g: f64,
    pub clipped: bool,
    pub dual_clipped: bool,
}

/// SPEC's clipped objective for ratio `r` (`ppo_clip`, and `gspo` with the sequence ratio).
pub fn clipped_term(cfg: &LossConfig, a: f64, r: f64) -> PolicyTerm {
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
    let g = if clipped || dual { 0.0 } else { -a * r };
    PolicyTerm {
        l,
        g,
        clipped,
        dual_clipped: dual,
    }
}

/// The KL estimator and its derivative with respect to logp.
pub fn kl_term(est: KlEstimator, logp: f64, ref_logp: f64) -> (f64, f64) {
    let delta = ref_logp - logp;
    match est {
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

/// What the policy term of a row reads beyond its own inputs: GSPO's ratio of its
/// sequence, and whether the covariance selection chose it.
pub(super) struct RowChoice {
    pub seq_ratio: f64,
    pub selected: bool,
}

/// The policy term `l_t` of row `r` and its `∂l/∂logp` (SPEC "Per token loss").
pub(super) fn token_term(
    cfg: &LossConfig,
    b: &Batch<'_>,
    stats: &[RowStats],
    r: usize,
    choice: RowChoice,
) -> PolicyTerm {
    let a = b.advantage(r);
    let (rt, clamped) = ratio(b, stats, r);
    let plain = |l: f64, g: f64| PolicyTerm {
        l,
        g,
        clipped: false,
        dual_clipped: false,
    };
    match cfg.mode {
        PolicyLossMode::Reinforce | PolicyLossMode::Gpg => plain(-a * stats[r].logp, -a),
        PolicyLossMode::PpoClip => clipped_term(cfg, a, rt),
        PolicyLossMode::Gspo => clipped_term(cfg, a, choice.seq_ratio),
        PolicyLossMode::Cispo => {
            let lo = 1.0 - cfg.clip_ratio_low as f64;
            let c = rt.clamp(lo, 1.0 + cfg.clip_ratio_high as f64);
            PolicyTerm {
                clipped: c != rt,
                ..plain(-c * a * stats[r].logp, -c * a)
            }
        }
        PolicyLossMode::Sapo => {
            let t = if a > 0.0 { cfg.tau_pos } else { cfg.tau_neg } as f64;
            let sig = 1.0 / (1.0 + (-t * (rt - 1.0)).exp());
            let g = match clamped {
                true => 0.0,
                false => -4.0 * sig * (1.0 - sig) * rt * a,
            };
            plain(-(4.0 / t) * sig * a, g)
        }
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
