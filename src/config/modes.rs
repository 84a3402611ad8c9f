//! The names of the loss's choices, as verl and TRL spell them: modes, estimators,
//! aggregations, presets, and their `FromStr`.

use crate::error::{Error, Result};

/// The per-token policy term `l_t` and its slope `g_t = ∂l_t/∂logp_t`
/// (docs/MATH.md#the-per-token-loss). Parsed from verl's names (`"ppo_clip"`, or its
/// alias `"vanilla"`, …); [`name`](Self::name) gives them back.
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
    /// GMPO: the geometric mean of each sequence's clipped token ratios, `−Ā_b·ρ_b`
    /// (verl's `geo_mean`; docs/MATH.md#policy-modes-of-2026).
    GeoMean,
    /// DPPO-Binary-TV: `−sg(min(r, C)·v)·A·logp`, `v` cutting tokens whose probability
    /// moved past `δ_low` / `δ_high` in total variation.
    DppoTv,
    /// DPPO-Binary-KL: as `dppo_tv` with a binary KL divergence.
    DppoKl,
    /// Direct Reward Optimization: `−(A·logp − ½·β_D·d²)`.
    Dro,
    /// VESPO (TRL): a detached per-sequence gamma weight `φ` on `−A·logp`.
    Vespo,
}

/// Whether the PPO ratio is each token's or its sequence's (TRL's
/// `importance_sampling_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ImportanceSamplingLevel {
    /// `r_t` per token.
    #[default]
    Token,
    /// `s_b = exp(clamp(Σ_t m·d_t / n_b, −20, 20))` for every token of b, with
    /// autograd's gradient through the mean.
    Sequence,
}

/// Which ratio the rollout correction weighs by (docs/MATH.md#rollout-correction), with
/// `δ_t = old_logp_t − rollout_logp_t` (`sg(logp_t)` in place of `old_logp_t` without
/// old log-probs).
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
    /// Per token, per sequence or the sequence's geometric mean; default per token.
    pub level: RolloutLevel,
    /// Truncate (TIS) or mask (MIS) a ratio outside `[C_lo, C_hi]`; default truncate.
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

/// TRL's `loss_type` names, as presets of mode and aggregation
/// (docs/MATH.md#aggregation-and-presets), applied by
/// [`LossConfig::with_loss_type`](crate::LossConfig::with_loss_type).
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
    /// LUSPO: `ppo_clip` at the sequence level, `seq-mean-token-sum` over every
    /// sequence (`w_r = m_r / B`).
    Luspo,
    /// Mode `vespo`, `token-mean` (with the caller's global normaliser, if any).
    Vespo,
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
    /// `|logp − ref_logp|`, derivative `sign(logp − ref_logp)`.
    Abs,
    /// Straight-through (verl's trailing `+`): `k1`'s value, `k2`'s gradient
    /// `logp − ref_logp` (alias `kl+`). `k2+` (`mse+`) is `k2`.
    K1Plus,
    /// `k3`'s value (its clamps included), `k2`'s unclamped gradient (`low_var_kl+`).
    K3Plus,
    /// `abs`'s value, `k2`'s gradient.
    AbsPlus,
}

/// How per-token losses become one number (verl's `loss_agg_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LossAggMode {
    /// `w_r = m_r / N`, `N = Σ_r m_r` or the caller's `global_normalizer` (verl's
    /// `token-mean`): every token alike.
    #[default]
    TokenMean,
    /// `w_r = m_r / (n_b·B')`, `B'` the sequences with `n_b > 0` (all of them with
    /// `count_empty_sequences`): each sequence's token mean, averaged (the GRPO paper).
    SeqMeanTokenMean,
    /// `w_r = m_r / B'`: each sequence's token sum, averaged over sequences.
    SeqMeanTokenSum,
    /// `w_r = m_r / (B·L_norm)`, `L_norm` the config's `l_norm` (default the sequence
    /// length `S`): Dr. GRPO's sum over a fixed length.
    SeqMeanTokenSumNorm,
    /// `w_r = m_r` (verl's `token-sum`; verl multiplies by its data-parallel size).
    TokenSum,
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
    "kl_cov" => PolicyLossMode::KlCov,
    "geo_mean" => PolicyLossMode::GeoMean,
    "dppo_tv" => PolicyLossMode::DppoTv,
    "dppo_kl" => PolicyLossMode::DppoKl,
    "dro" => PolicyLossMode::Dro,
    "vespo" => PolicyLossMode::Vespo);
names!(ImportanceSamplingLevel, "importance_sampling_level",
    "token" => ImportanceSamplingLevel::Token,
    "sequence" => ImportanceSamplingLevel::Sequence);
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
    "sapo" => TrlLossType::Sapo,
    "luspo" => TrlLossType::Luspo,
    "vespo" => TrlLossType::Vespo);
names!(KlEstimator, "kl_loss_type",
    "k1" => KlEstimator::K1, "kl" => KlEstimator::K1,
    "k2" => KlEstimator::K2, "mse" => KlEstimator::K2,
    "k3" => KlEstimator::K3, "low_var_kl" => KlEstimator::K3,
    "abs" => KlEstimator::Abs,
    "k1+" => KlEstimator::K1Plus, "kl+" => KlEstimator::K1Plus,
    "k2+" => KlEstimator::K2, "mse+" => KlEstimator::K2,
    "k3+" => KlEstimator::K3Plus, "low_var_kl+" => KlEstimator::K3Plus,
    "abs+" => KlEstimator::AbsPlus);
names!(LossAggMode, "loss_agg_mode",
    "token-mean" => LossAggMode::TokenMean,
    "seq-mean-token-mean" => LossAggMode::SeqMeanTokenMean,
    "seq-mean-token-sum" => LossAggMode::SeqMeanTokenSum,
    "seq-mean-token-sum-norm" => LossAggMode::SeqMeanTokenSumNorm,
    "token-sum" => LossAggMode::TokenSum);

impl PolicyLossMode {
    /// Every mode: 2025's, then 2026's, in declaration order.
    pub const ALL: [PolicyLossMode; 13] = [
        Self::Reinforce,
        Self::PpoClip,
        Self::Gspo,
        Self::Cispo,
        Self::Sapo,
        Self::Gpg,
        Self::ClipCov,
        Self::KlCov,
        Self::GeoMean,
        Self::DppoTv,
        Self::DppoKl,
        Self::Dro,
        Self::Vespo,
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
            Self::GeoMean => "geo_mean",
            Self::DppoTv => "dppo_tv",
            Self::DppoKl => "dppo_kl",
            Self::Dro => "dro",
            Self::Vespo => "vespo",
        }
    }

    /// Whether the mode selects tokens by covariance (batch-wide, before any gradient).
    pub fn selects_tokens(self) -> bool {
        matches!(self, Self::ClipCov | Self::KlCov)
    }

    /// Whether the mode's policy term reads a per-sequence sum of its tokens' ratios
    /// (GSPO's `s_b`, GMPO's `ρ_b`, VESPO's `L_b`).
    pub fn per_sequence(self) -> bool {
        matches!(self, Self::Gspo | Self::GeoMean | Self::Vespo)
    }

    /// Whether `importance_sampling_level = sequence` applies to the mode (TRL's).
    pub fn has_sequence_level(self) -> bool {
        matches!(self, Self::PpoClip | Self::Cispo | Self::Sapo)
    }
}
impl ImportanceSamplingLevel {
    /// Every level.
    pub const ALL: [ImportanceSamplingLevel; 2] = [Self::Token, Self::Sequence];
}
impl RolloutLevel {
    /// Every level.
    pub const ALL: [RolloutLevel; 3] = [Self::Token, Self::Sequence, Self::Geometric];
}
impl RolloutMode {
    /// Every mode.
    pub const ALL: [RolloutMode; 2] = [Self::Truncate, Self::Mask];
}
impl TrlLossType {
    /// Every preset.
    pub const ALL: [TrlLossType; 8] = [
        Self::Grpo,
        Self::Bnpo,
        Self::DrGrpo,
        Self::Dapo,
        Self::Cispo,
        Self::Sapo,
        Self::Luspo,
        Self::Vespo,
    ];
}
impl KlEstimator {
    /// Every estimator (each once: the aliases `kl`, `mse`, `k2+`, … parse to these).
    pub const ALL: [KlEstimator; 7] = [
        Self::K1,
        Self::K2,
        Self::K3,
        Self::Abs,
        Self::K1Plus,
        Self::K3Plus,
        Self::AbsPlus,
    ];

    /// The estimator whose value this one takes (itself, or the one before its `+`).
    pub fn value_estimator(self) -> KlEstimator {
        match self {
            Self::K1Plus => Self::K1,
            Self::K3Plus => Self::K3,
            Self::AbsPlus => Self::Abs,
            other => other,
        }
    }

    /// A straight-through estimator (verl's trailing `+`): `k2`'s gradient.
    pub fn straight_through(self) -> bool {
        self != self.value_estimator()
    }

    /// verl's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::K1 => "k1",
            Self::K2 => "k2",
            Self::K3 => "k3",
            Self::Abs => "abs",
            Self::K1Plus => "k1+",
            Self::K3Plus => "k3+",
            Self::AbsPlus => "abs+",
        }
    }
}
impl LossAggMode {
    /// Every aggregation mode.
    pub const ALL: [LossAggMode; 5] = [
        Self::TokenMean,
        Self::SeqMeanTokenMean,
        Self::SeqMeanTokenSum,
        Self::SeqMeanTokenSumNorm,
        Self::TokenSum,
    ];

    /// verl's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::TokenMean => "token-mean",
            Self::SeqMeanTokenMean => "seq-mean-token-mean",
            Self::SeqMeanTokenSum => "seq-mean-token-sum",
            Self::SeqMeanTokenSumNorm => "seq-mean-token-sum-norm",
            Self::TokenSum => "token-sum",
        }
    }
}

/// How rewards become advantages (docs/MATH.md#advantages-from-rewards): groups of
/// `group_size` consecutive responses to one prompt.
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
    /// Every estimator.
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
