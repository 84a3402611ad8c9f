//! Loss configuration, in SPEC's (verl's) words. Shared by the kernels and the CPU
//! reference, and parsed from the same strings verl and the CLI use.

use crate::error::{Error, Result};

/// The per-token policy term `l_t` (SPEC "Per token loss").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PolicyLossMode {
    /// `−A·logp` (the seed).
    Reinforce,
    /// PPO / GRPO clipped ratio with asymmetric ε and optional dual-clip.
    #[default]
    PpoClip,
    /// Sequence-level ratio (GSPO).
    Gspo,
    /// `−sg(clip(r))·A·logp` (MiniMax-M1's CISPO): the clipped ratio as a detached
    /// weight, so every token keeps a gradient.
    Cispo,
    /// A soft gate `σ(τ_A·(r − 1))` instead of the hard clip (SAPO).
    Sapo,
    /// `−A·logp` with GPG's advantages ([`crate::AdvantageEstimator::Gpg`]).
    Gpg,
    /// `ppo_clip` with the gradient cut on a seeded sample of high-covariance tokens.
    ClipCov,
    /// `−A·r` plus a KL penalty on the top-covariance tokens.
    KlCov,
}

/// Which ratio the rollout correction weighs by (SPEC "Rollout correction").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RolloutLevel {
    /// `ρ_t` per token.
    #[default]
    Token,
    /// `ρ_b = exp(Σ_t m·δ_t)` for every token of the sequence.
    Sequence,
    /// `ρ_b = exp(Σ_t m·δ_t / Σ_t m)`.
    Geometric,
}

/// What the rollout correction does to a ratio outside `[C_lo, C_hi]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RolloutMode {
    /// Truncated importance sampling: clamp into the band.
    #[default]
    Truncate,
    /// Masked importance sampling: weight 0 outside the band.
    Mask,
}

/// Rollout correction: the policy term of each token weighted by a detached ratio of
/// the trainer's to the sampler's probabilities (needs the sampler's log-probs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RolloutCorrection {
    pub level: RolloutLevel,
    pub mode: RolloutMode,
    /// `C_hi` (verl's default 2.0; TRL uses 3.0).
    pub threshold: f32,
    /// `C_lo`; `None`: 0 for `truncate`, `1 / C_hi` for `mask`.
    pub threshold_lower: Option<f32>,
}

impl RolloutCorrection {
    /// `level` and `mode` with the default thresholds.
    pub fn new(level: RolloutLevel, mode: RolloutMode) -> Self {
        RolloutCorrection {
            level,
            mode,
            threshold: 2.0,
            threshold_lower: None,
        }
    }

    /// `C_lo`, with its default.
    pub fn lower(&self) -> f32 {
        self.threshold_lower.unwrap_or(match self.mode {
            RolloutMode::Truncate => 0.0,
            RolloutMode::Mask => 1.0 / self.threshold,
        })
    }
}

/// TRL's `loss_type` names, as presets of mode and aggregation (SPEC "Aggregation").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrlLossType {
    /// `seq-mean-token-mean`, counting empty sequences in B' as TRL does.
    Grpo,
    /// `token-mean`.
    Bnpo,
    /// `seq-mean-token-sum-norm` with `L_norm = max_completion_length`.
    DrGrpo,
    /// `token-mean` (with the caller's global normaliser, if any).
    Dapo,
    /// Mode `cispo`, `token-mean`.
    Cispo,
    /// Mode `sapo`, `seq-mean-token-mean`.
    Sapo,
}

/// The KL estimator of the penalty against the reference policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KlEstimator {
    /// `logp − ref_logp` (alias `kl`).
    K1,
    /// `½ (ref_logp − logp)²` (alias `mse`).
    K2,
    /// `exp(δ) − δ − 1` with clamps (alias `low_var_kl`), verl's default.
    #[default]
    K3,
}

/// How per-token losses become one number (verl's `loss_agg_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LossAggMode {
    #[default]
    TokenMean,
    SeqMeanTokenMean,
    SeqMeanTokenSum,
    SeqMeanTokenSumNorm,
}

macro_rules! names {
    ($ty:ty, $arg:literal, $($name:literal => $val:expr),+ $(,)?) => {
        impl std::str::FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok($val),)+
                    _ => Err(Error::arg($arg, format!(
                        "`{s}` is not one of {}", [$($name),+].join(", ")))),
                }
            }
        }
    };
}

names!(PolicyLossMode, "mode",
    "reinforce" => PolicyLossMode::Reinforce,
    "ppo_clip" => PolicyLossMode::PpoClip,
    "vanilla" => PolicyLossMode::PpoClip,
    "gspo" => PolicyLossMode::Gspo,
    "cispo" => PolicyLossMode::Cispo,
    "sapo" => PolicyLossMode::Sapo,
    "gpg" => PolicyLossMode::Gpg,
    "clip_cov" => PolicyLossMode::ClipCov,
    "kl_cov" => PolicyLossMode::KlCov);
names!(RolloutLevel, "rollout_is",
    "token" => RolloutLevel::Token,
    "sequence" => RolloutLevel::Sequence,
    "geometric" => RolloutLevel::Geometric);
names!(RolloutMode, "rollout_is_mode",
    "truncate" => RolloutMode::Truncate,
    "mask" => RolloutMode::Mask);
names!(TrlLossType, "loss_type",
    "grpo" => TrlLossType::Grpo,
    "bnpo" => TrlLossType::Bnpo,
    "dr_grpo" => TrlLossType::DrGrpo,
    "dapo" => TrlLossType::Dapo,
    "cispo" => TrlLossType::Cispo,
    "sapo" => TrlLossType::Sapo);
names!(KlEstimator, "kl_loss_type",
    "k1" => KlEstimator::K1, "kl" => KlEstimator::K1,
    "k2" => KlEstimator::K2, "mse" => KlEstimator::K2,
    "k3" => KlEstimator::K3, "low_var_kl" => KlEstimator::K3);
names!(LossAggMode, "loss_agg_mode",
    "token-mean" => LossAggMode::TokenMean,
    "seq-mean-token-mean" => LossAggMode::SeqMeanTokenMean,
    "seq-mean-token-sum" => LossAggMode::SeqMeanTokenSum,
    "seq-mean-token-sum-norm" => LossAggMode::SeqMeanTokenSumNorm);

impl PolicyLossMode {
    pub const ALL: [PolicyLossMode; 8] = [
        Self::Reinforce,
        Self::PpoClip,
        Self::Gspo,
        Self::Cispo,
        Self::Sapo,
        Self::Gpg,
        Self::ClipCov,
        Self::KlCov,
    ];

    /// verl's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reinforce => "reinforce",
            Self::PpoClip => "ppo_clip",
            Self::Gspo => "gspo",
            Self::Cispo => "cispo",
            Self::Sapo => "sapo",
            Self::Gpg => "gpg",
            Self::ClipCov => "clip_cov",
            Self::KlCov => "kl_cov",
        }
    }

    /// Whether the mode selects tokens by covariance (batch-wide, before any gradient).
    pub fn selects_tokens(self) -> bool {
        matches!(self, Self::ClipCov | Self::KlCov)
    }
}
impl RolloutLevel {
    pub const ALL: [RolloutLevel; 3] = [Self::Token, Self::Sequence, Self::Geometric];
}
impl RolloutMode {
    pub const ALL: [RolloutMode; 2] = [Self::Truncate, Self::Mask];
}
impl TrlLossType {
    pub const ALL: [TrlLossType; 6] = [
        Self::Grpo,
        Self::Bnpo,
        Self::DrGrpo,
        Self::Dapo,
        Self::Cispo,
        Self::Sapo,
    ];
}
impl KlEstimator {
    pub const ALL: [KlEstimator; 3] = [Self::K1, Self::K2, Self::K3];
}
impl LossAggMode {
    pub const ALL: [LossAggMode; 4] = [
        Self::TokenMean,
        Self::SeqMeanTokenMean,
        Self::SeqMeanTokenSum,
        Self::SeqMeanTokenSumNorm,
    ];
}

/// Everything that shapes the loss. Defaults are verl's: `ppo_clip`, ε = 0.2/0.2, no
/// dual-clip, `low_var_kl` with β = 0, γ = 0, `token-mean`, τ = 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    pub mode: PolicyLossMode,
    /// ε_low: the ratio is clipped below at `1 − clip_ratio_low`.
    pub clip_ratio_low: f32,
    /// ε_high: the ratio is clipped above at `1 + clip_ratio_high` (DAPO clip-higher).
    pub clip_ratio_high: f32,
    /// Dual-clip constant `c > 1` for negative advantages; `None` disables it.
    pub clip_ratio_c: Option<f32>,
    pub kl_loss_type: KlEstimator,
    /// β; the KL term needs reference log-probs when it is not 0.
    pub kl_coef: f32,
    /// γ: the loss subtracts `γ·H`.
    pub entropy_coeff: f32,
    pub loss_agg_mode: LossAggMode,
    /// `token-mean` divides by this instead of Σ mask (data-parallel training).
    pub global_normalizer: Option<f32>,
    /// `seq-mean-token-sum-norm`'s constant; `None` means the sequence length S.
    pub l_norm: Option<f32>,
    /// τ: logits are divided by it before the softmax.
    pub temperature: f32,
    /// `sapo`'s gate temperature for `A > 0` (τ_pos).
    pub tau_pos: f32,
    /// `sapo`'s gate temperature for `A ≤ 0` (τ_neg).
    pub tau_neg: f32,
    /// `clip_cov`: the share of masked-in tokens to cut, in (0, 1].
    pub clip_cov_ratio: f32,
    /// `clip_cov`: candidates have `clip_cov_lb < cov < clip_cov_ub`.
    pub clip_cov_lb: f32,
    pub clip_cov_ub: f32,
    /// `kl_cov`: the share of masked-in tokens to penalise, in (0, 1].
    pub kl_cov_ratio: f32,
    /// `kl_cov`'s κ (verl's `ppo_kl_coef`).
    pub ppo_kl_coef: f32,
    /// `clip_cov`'s seed for its choice among candidates.
    pub seed: u32,
    /// Weigh the policy term by the trainer/sampler ratio (needs rollout log-probs).
    pub rollout_correction: Option<RolloutCorrection>,
    /// `ρ_H`: keep the policy term of the tokens whose entropy is at least the
    /// `(1 − ρ_H)` quantile of the batch's, in (0, 1] (TRL's `top_entropy_quantile`).
    pub top_entropy_quantile: Option<f32>,
    /// With the entropy mask: keep the `⌈ρ_H·N⌉` highest and aggregate the policy term
    /// over the kept tokens only (the 80/20 paper's code).
    pub top_entropy_renormalize: bool,
    /// `seq-mean` modes: count empty sequences in B' too (TRL's `grpo` does).
    pub count_empty_sequences: bool,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            mode: PolicyLossMode::PpoClip,
            clip_ratio_low: 0.2,
            clip_ratio_high: 0.2,
            clip_ratio_c: None,
            kl_loss_type: KlEstimator::K3,
            kl_coef: 0.0,
            entropy_coeff: 0.0,
            loss_agg_mode: LossAggMode::TokenMean,
            global_normalizer: None,
            l_norm: None,
            temperature: 1.0,
            tau_pos: 1.0,
            tau_neg: 1.05,
            clip_cov_ratio: 0.0002,
            clip_cov_lb: 1.0,
            clip_cov_ub: 5.0,
            kl_cov_ratio: 0.0002,
            ppo_kl_coef: 0.1,
            seed: 0,
            rollout_correction: None,
            top_entropy_quantile: None,
            top_entropy_renormalize: false,
            count_empty_sequences: false,
        }
    }
}

impl LossConfig {
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        positive("temperature", self.temperature)?;
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
        Ok(())
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

    /// TRL's `loss_type` as a preset on this configuration: its mode (for `cispo` and
    /// `sapo`) and aggregation; `dr_grpo` needs `max_completion_length` (its `L_norm`).
    /// The other fields (clip ratios, KL, the global normaliser) stay as they are.
    pub fn with_loss_type(
        mut self,
        loss_type: TrlLossType,
        max_completion_length: Option<u32>,
    ) -> Result<Self> {
        use LossAggMode as A;
        self.count_empty_sequences = false;
        match loss_type {
            TrlLossType::Grpo => {
                self.loss_agg_mode = A::SeqMeanTokenMean;
                self.count_empty_sequences = true;
            }
            TrlLossType::Bnpo | TrlLossType::Dapo => self.loss_agg_mode = A::TokenMean,
            TrlLossType::DrGrpo => {
                let l = max_completion_length.ok_or_else(|| {
                    Error::arg(
                        "max_completion_length",
                        "dr_grpo divides by it (its L_norm): give it",
                    )
                })?;
                if l == 0 {
                    return Err(Error::arg("max_completion_length", "must be at least 1"));
                }
                self.loss_agg_mode = A::SeqMeanTokenSumNorm;
                self.l_norm = Some(l as f32);
            }
            TrlLossType::Cispo => {
                self.mode = PolicyLossMode::Cispo;
                self.loss_agg_mode = A::TokenMean;
            }
            TrlLossType::Sapo => {
                self.mode = PolicyLossMode::Sapo;
                self.loss_agg_mode = A::SeqMeanTokenMean;
            }
        }
        Ok(self)
    }

    /// Whether a call needs every row's statistics before any gradient row: the
    /// covariance modes, the entropy mask, GSPO's sequence ratio, and a rollout
    /// correction whose ratio needs the current log-probs (no old log-probs).
    pub fn needs_stats_first(&self, has_old: bool) -> bool {
        self.mode == PolicyLossMode::Gspo
            || self.mode.selects_tokens()
            || self.top_entropy_quantile.is_some()
            || (self.rollout_correction.is_some() && !has_old)
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

/// How rewards become advantages (SPEC "Advantages"): groups of `group_size`
/// consecutive responses to one prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdvantageEstimator {
    /// `(R_i − mean_g) / (std_g + 1e-6)`, std unbiased; a group of one gets 0.
    Grpo,
    /// `R_i − mean_g` (Dr. GRPO).
    GrpoNoStd,
    /// `R_i − mean of the other G − 1` (a group of one gets 0).
    Rloo,
    /// Whitened over the whole batch: `(R_i − mean) / (std + 1e-6)`, std unbiased.
    ReinforcePlusPlus,
    /// GPG: `α·(R_i − mean_g)`, `α = B / max(#{i : R_i ≠ 0}, 1)` over the batch's B
    /// rewards; a group of one gets 0.
    Gpg,
}

impl AdvantageEstimator {
    pub const ALL: [AdvantageEstimator; 5] = [
        Self::Grpo,
        Self::GrpoNoStd,
        Self::Rloo,
        Self::ReinforcePlusPlus,
        Self::Gpg,
    ];
}

impl std::str::FromStr for AdvantageEstimator {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "grpo" => Ok(Self::Grpo),
            "grpo_no_std" | "dr_grpo" => Ok(Self::GrpoNoStd),
            "rloo" => Ok(Self::Rloo),
            "reinforce_pp" | "reinforce_plus_plus" => Ok(Self::ReinforcePlusPlus),
            "gpg" => Ok(Self::Gpg),
            _ => Err(Error::arg(
                "estimator",
                format!("`{s}` is not one of grpo, grpo_no_std, rloo, reinforce_pp, gpg"),
            )),
        }
    }
}
