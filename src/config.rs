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
    "gspo" => PolicyLossMode::Gspo);
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
    pub const ALL: [PolicyLossMode; 3] = [Self::Reinforce, Self::PpoClip, Self::Gspo];
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
        }
    }
}

impl LossConfig {
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let finite = |arg: &'static str, v: f32| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(Error::arg(arg, format!("must be finite, got {v}")))
            }
        };
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::arg(
                "temperature",
                format!("must be finite and > 0, got {}", self.temperature),
            ));
        }
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
            if !(n.is_finite() && n > 0.0) {
                return Err(Error::arg(
                    "global_normalizer",
                    format!("must be finite and > 0, got {n}"),
                ));
            }
        }
        if let Some(n) = self.l_norm {
            if !(n.is_finite() && n > 0.0) {
                return Err(Error::arg(
                    "l_norm",
                    format!("must be finite and > 0, got {n}"),
                ));
            }
        }
        Ok(())
    }
}
