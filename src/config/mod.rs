//! Loss configuration, in verl's words (docs/MATH.md, "Conventions and notation").
//! Shared by the kernels and the CPU reference, and parsed from the same strings verl
//! and the CLI use.

use crate::error::{Error, Result};

mod modes;
mod validate;

pub use modes::*;

/// Everything that shapes the loss. Defaults are verl's: `ppo_clip`, ε = 0.2/0.2, no
/// dual-clip, `low_var_kl` with β = 0, γ = 0, `token-mean`, τ = 1; every option of 2026
/// and of the sampler off. A call checks it first ([`LossConfig::validate`], each error
/// an [`Error::InvalidArgument`] naming the field). The loss it describes is
/// `Σ_r [w'_r·q_r·e_r·o_r·l_r + w_r·(β·kl_r − γ·H_r)]` (docs/MATH.md#the-per-token-loss).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    /// The per-token policy term `l_t` and its slope `g_t` (verl's `policy_loss_mode`);
    /// default `ppo_clip`. See docs/MATH.md#policy-modes-of-2025 and
    /// docs/MATH.md#policy-modes-of-2026.
    pub mode: PolicyLossMode,
    /// ε_low: the ratio is clipped below at `1 − clip_ratio_low` (default 0.2; see
    /// docs/MATH.md#policy-modes-of-2025). The `dppo_*` modes read it as `δ_low`.
    pub clip_ratio_low: f32,
    /// ε_high: the ratio is clipped above at `1 + clip_ratio_high` (DAPO clip-higher;
    /// default 0.2). The `dppo_*` modes read it as `δ_high`.
    pub clip_ratio_high: f32,
    /// Dual-clip constant `c > 1` for negative advantages; `None` disables it.
    pub clip_ratio_c: Option<f32>,
    /// The estimator `kl_t` of the KL term against `ref_logp` (verl's `kl_loss_type`);
    /// default `low_var_kl` (k3). See docs/MATH.md#the-kl-term.
    pub kl_loss_type: KlEstimator,
    /// β; the KL term needs reference log-probs when it is not 0.
    pub kl_coef: f32,
    /// γ: the loss subtracts `γ·H`.
    pub entropy_coeff: f32,
    /// How the per-token terms are weighted into one number (the weight `w_r` of verl's
    /// `loss_agg_mode`); default `token-mean`. See docs/MATH.md#aggregation-and-presets.
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
    /// `clip_cov`: the lower bound of a candidate's covariance, exclusive (candidates
    /// have `clip_cov_lb < cov < clip_cov_ub`); default 1. See
    /// docs/MATH.md#covariance-token-selection.
    pub clip_cov_lb: f32,
    /// `clip_cov`: the upper bound of a candidate's covariance, exclusive; default 5.
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
    /// `dro`'s β_D (verl's `policy_loss.dro_beta`): required by `dro`, > 0.
    pub dro_beta: Option<f32>,
    /// VESPO's `k` for `A ≥ 0` (TRL's `vespo_k_pos`); default 2. With `λ`, it shapes
    /// the gamma weight `φ = exp(λ + k·L_b − λ·e^{L_b})`, which peaks where the
    /// sequence's importance weight is `k/λ` (docs/MATH.md#policy-modes-of-2026).
    pub vespo_k_pos: f32,
    /// VESPO's `λ` for `A ≥ 0` (TRL's `vespo_lambda_pos`); default 3. Floored at 1e-4.
    pub vespo_lambda_pos: f32,
    /// VESPO's `k` for `A < 0` (TRL's `vespo_k_neg`); default 3.
    pub vespo_k_neg: f32,
    /// VESPO's `λ` for `A < 0` (TRL's `vespo_lambda_neg`); default 2. Floored at 1e-4.
    pub vespo_lambda_neg: f32,
    /// TRL's two-sided clip δ > 1 (INTELLECT-2) for `ppo_clip` and `gspo`: the
    /// unclipped term is capped at `−A·min(r, δ)`. Excludes `clip_ratio_c`.
    pub delta: Option<f32>,
    /// TRL's `importance_sampling_level` (`ppo_clip`, `cispo`, `sapo`).
    pub importance_sampling_level: ImportanceSamplingLevel,
    /// TRL's `off_policy_mask_threshold` θ ≥ 0 (DeepSeek-V3.2): a sequence with
    /// `A < 0` whose mean `σ − logp` exceeds θ loses its policy term.
    pub off_policy_mask_threshold: Option<f32>,
    /// TRL's `use_bias_correction_kl`: the KL term times the importance ratio.
    pub use_bias_correction_kl: bool,
    /// The sampler's logit softcap `c > 0` (Gemma 2, Grok): every logit becomes
    /// `c·tanh(x/c)` before the temperature (docs/MATH.md#the-samplers-distribution).
    pub logit_softcap: Option<f32>,
    /// The sampler's top-k: keep the tokens with fewer than `k` larger values (every
    /// token tied with the k-th kept); 0 or −1: off.
    pub top_k: i32,
    /// The sampler's top-p in (0, 1]: keep the most probable tokens whose mass before
    /// them is below p (ties stand or fall together); 1: off.
    pub top_p: f32,
    /// The sampler's min-p in [0, 1]: keep the tokens at least `min_p` times as
    /// probable as the most probable; 0: off.
    pub min_p: f32,
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
            dro_beta: None,
            vespo_k_pos: 2.0,
            vespo_lambda_pos: 3.0,
            vespo_k_neg: 3.0,
            vespo_lambda_neg: 2.0,
            delta: None,
            importance_sampling_level: ImportanceSamplingLevel::Token,
            off_policy_mask_threshold: None,
            use_bias_correction_kl: false,
            logit_softcap: None,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

impl LossConfig {
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
            TrlLossType::Luspo => {
                self.mode = PolicyLossMode::PpoClip;
                self.importance_sampling_level = ImportanceSamplingLevel::Sequence;
                self.loss_agg_mode = A::SeqMeanTokenSum;
                self.count_empty_sequences = true;
            }
            TrlLossType::Vespo => {
                self.mode = PolicyLossMode::Vespo;
                self.loss_agg_mode = A::TokenMean;
            }
        }
        Ok(self)
    }

    /// Whether the policy ratio is per sequence: `gspo`, or
    /// `importance_sampling_level = sequence`.
    pub fn sequence_ratio(&self) -> bool {
        self.mode == PolicyLossMode::Gspo
            || self.importance_sampling_level == ImportanceSamplingLevel::Sequence
    }

    /// Whether a call runs the per-sequence pass (`seq_terms.wgsl`): the sequence
    /// ratios of GSPO, TRL's sequence level, GMPO and VESPO, and the off-policy mask.
    pub fn needs_sequence_pass(&self) -> bool {
        self.mode.per_sequence()
            || self.sequence_ratio()
            || self.off_policy_mask_threshold.is_some()
    }

    /// Whether the call reads the sampler's log-probs when given: the rollout
    /// correction, and the off-policy mask (its σ).
    pub fn reads_rollout_logp(&self) -> bool {
        self.rollout_correction.is_some() || self.off_policy_mask_threshold.is_some()
    }

    /// Whether the bias-corrected KL term is on (it needs the KL term and the switch).
    pub fn bias_corrected_kl(&self) -> bool {
        self.use_bias_correction_kl && self.kl_coef != 0.0
    }

    /// Whether a call needs every row's statistics before any gradient row: the
    /// covariance modes, the entropy mask, GSPO's sequence ratio, and a rollout
    /// correction whose ratio needs the current log-probs (no old log-probs).
    pub fn needs_stats_first(&self, has_old: bool) -> bool {
        self.mode == PolicyLossMode::Gspo
            || self.mode.selects_tokens()
            || self.top_entropy_quantile.is_some()
            || (self.rollout_correction.is_some() && !has_old)
            || self.off_policy_mask_threshold.is_some()
            || (self.needs_sequence_pass() && (has_old || self.bias_corrected_kl()))
    }
}
