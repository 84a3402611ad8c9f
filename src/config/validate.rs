//! `LossConfig::validate`: every field checked, each error naming its field (the error
//! tables of docs/MATH.md, "Bad input" and "The eval command").

use super::*;
use crate::error::{Error, Result};

impl LossConfig {
    /// Checks that the optional per-row inputs the configuration reads are given: the
    /// reference log-probs for a KL term, the sampler's for a rollout correction. The
    /// error names the missing input.
    pub fn check_optional_inputs(&self, has_ref: bool, has_rollout: bool) -> Result<()> {
        if self.kl_coef != 0.0 && !has_ref {
            return Err(Error::arg("ref_logprobs", "required when kl_coef is not 0"));
        }
        if self.rollout_correction.is_some() && !has_rollout {
            return Err(Error::arg(
                "rollout_logprobs",
                "required by the rollout correction (rollout_correction is set)",
            ));
        }
        Ok(())
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        positive("temperature", self.temperature)?;
        if let Some(c) = self.logit_softcap {
            positive("logit_softcap", c)?;
        }
        self.validate_kept_options()?;
        for (arg, v) in [
            ("clip_ratio_low", self.clip_ratio_low),
            ("clip_ratio_high", self.clip_ratio_high),
        ] {
            finite(arg, v)?;
            if v < 0.0 {
                return Err(Error::arg(arg, format!("must be ≥ 0, got {v}")));
            }
        }
        if let Some(c) = self.clip_ratio_c {
            if !(c.is_finite() && c > 1.0) {
                return Err(Error::arg(
                    "clip_ratio_c",
                    format!("must be finite and > 1, got {c}"),
                ));
            }
        }
        finite("kl_coef", self.kl_coef)?;
        finite("entropy_coeff", self.entropy_coeff)?;
        if let Some(n) = self.global_normalizer {
            positive("global_normalizer", n)?;
        }
        if let Some(n) = self.l_norm {
            positive("l_norm", n)?;
        }
        positive("tau_pos", self.tau_pos)?;
        positive("tau_neg", self.tau_neg)?;
        self.validate_cov()?;
        if let Some(rc) = &self.rollout_correction {
            rc.validate()?;
        }
        if let Some(q) = self.top_entropy_quantile {
            share("top_entropy_quantile", q)?;
        } else if self.top_entropy_renormalize {
            return Err(Error::arg(
                "top_entropy_renormalize",
                "needs top_entropy_quantile (the share of tokens to keep)",
            ));
        }
        self.validate_2026()
    }

    /// The errors of the 2026 modes and options (docs/MATH.md, "Policy modes of 2026",
    /// "Ratio options" and the error table of "The eval command"): each bad value or
    /// combination named by its field.
    fn validate_2026(&self) -> Result<()> {
        use PolicyLossMode as M;
        let mode = self.mode.name();
        if self.mode == M::Dro {
            match self.dro_beta {
                Some(b) => positive("dro_beta", b)?,
                None => return Err(Error::arg("dro_beta", "mode dro needs β_D > 0: give it")),
            }
        }
        for (arg, v) in [
            ("vespo_k_pos", self.vespo_k_pos),
            ("vespo_lambda_pos", self.vespo_lambda_pos),
            ("vespo_k_neg", self.vespo_k_neg),
            ("vespo_lambda_neg", self.vespo_lambda_neg),
        ] {
            finite(arg, v)?;
        }
        if let Some(d) = self.delta {
            if !(d.is_finite() && d > 1.0) {
                return Err(Error::arg(
                    "delta",
                    format!("must be finite and > 1, got {d}"),
                ));
            }
            if !matches!(self.mode, M::PpoClip | M::Gspo) {
                return Err(Error::arg(
                    "delta",
                    format!("applies to ppo_clip and gspo, not {mode}"),
                ));
            }
            if self.clip_ratio_c.is_some() {
                return Err(Error::arg("delta", "excludes dual-clip (clip_ratio_c)"));
            }
        }
        if self.importance_sampling_level == ImportanceSamplingLevel::Sequence
            && !self.mode.has_sequence_level()
        {
            return Err(Error::arg(
                "importance_sampling_level",
                format!("sequence applies to ppo_clip, cispo and sapo, not {mode}"),
            ));
        }
        if let Some(t) = self.off_policy_mask_threshold {
            if !(t.is_finite() && t >= 0.0) {
                return Err(Error::arg(
                    "off_policy_mask_threshold",
                    format!("must be finite and ≥ 0, got {t}"),
                ));
            }
        }
        if self.mode == M::GeoMean {
            for (arg, on) in [
                ("top_entropy_quantile", self.top_entropy_quantile.is_some()),
                (
                    "off_policy_mask_threshold",
                    self.off_policy_mask_threshold.is_some(),
                ),
            ] {
                if on {
                    return Err(Error::arg(arg, "geo_mean takes no token or sequence mask"));
                }
            }
        }
        match self.rollout_correction {
            Some(rc) if self.mode == M::Vespo && rc.level != RolloutLevel::Token => {
                Err(Error::arg(
                    "rollout_is",
                    "vespo takes the rollout correction at the token level only",
                ))
            }
            _ => Ok(()),
        }
    }

    /// `clip_cov`'s and `kl_cov`'s fields.
    fn validate_cov(&self) -> Result<()> {
        share("clip_cov_ratio", self.clip_cov_ratio)?;
        share("kl_cov_ratio", self.kl_cov_ratio)?;
        finite("clip_cov_lb", self.clip_cov_lb)?;
        finite("clip_cov_ub", self.clip_cov_ub)?;
        if self.clip_cov_lb >= self.clip_cov_ub {
            return Err(Error::arg(
                "clip_cov_ub",
                format!(
                    "must exceed clip_cov_lb ({}), got {}",
                    self.clip_cov_lb, self.clip_cov_ub
                ),
            ));
        }
        finite("ppo_kl_coef", self.ppo_kl_coef)
    }
}

impl RolloutCorrection {
    /// `C_hi > 0` and `0 ≤ C_lo ≤ C_hi`, named as verl's fields.
    fn validate(&self) -> Result<()> {
        positive("rollout_is_threshold", self.threshold)?;
        let lo = self.lower();
        if !(lo.is_finite() && lo >= 0.0) {
            return Err(Error::arg(
                "rollout_is_threshold_lower",
                format!("must be finite and ≥ 0, got {lo}"),
            ));
        }
        if lo > self.threshold {
            return Err(Error::arg(
                "rollout_is_threshold_lower",
                format!(
                    "C_lo = {lo} exceeds C_hi = rollout_is_threshold = {}",
                    self.threshold
                ),
            ));
        }
        Ok(())
    }
}

fn finite(arg: &'static str, v: f32) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::arg(arg, format!("must be finite, got {v}")))
    }
}

fn positive(arg: &'static str, v: f32) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::arg(arg, format!("must be finite and > 0, got {v}")))
    }
}

fn share(arg: &'static str, v: f32) -> Result<()> {
    if v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(Error::arg(arg, format!("must lie in (0, 1], got {v}")))
    }
}

impl LossConfig {
    /// The ranges of the sampler's computed kept set (docs/MATH.md#computed-kept-sets;
    /// an error naming the option).
    fn validate_kept_options(&self) -> Result<()> {
        if self.top_k < -1 {
            return Err(Error::arg(
                "top_k",
                format!("must be ≥ −1 (0 or −1: off), got {}", self.top_k),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::arg(
                "top_p",
                format!("must lie in (0, 1] (1: off), got {}", self.top_p),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::arg(
                "min_p",
                format!("must lie in [0, 1] (0: off), got {}", self.min_p),
            ));
        }
        Ok(())
    }

    /// Whether top-k, top-p or min-p is on: the kept set is computed from the row.
    pub fn computes_kept_set(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0 || self.min_p > 0.0
    }

    /// The first computed-set option that is on, by its name.
    pub(crate) fn kept_option(&self) -> Option<&'static str> {
        [
            ("top_k", self.top_k > 0),
            ("top_p", self.top_p < 1.0),
            ("min_p", self.min_p > 0.0),
        ]
        .into_iter()
        .find_map(|(n, on)| on.then_some(n))
    }
}
