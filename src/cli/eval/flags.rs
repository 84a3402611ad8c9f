//! The loss configuration as `eval`'s flags, grouped under `--help`'s headings, and
//! the configuration's errors renamed to the flags that set them.

use clap::Args;
use wgpu_policy_loss::{
    Error, ImportanceSamplingLevel, KlEstimator, LossAggMode, LossConfig, PolicyLossMode,
    RolloutCorrection, RolloutLevel, RolloutMode, TrlLossType,
};

use super::bad;

/// `eval --help`'s headings, in the order they are shown.
pub(super) const IO: &str = "Input and output";
const MODE: &str = "Loss mode";
const RATIO: &str = "Ratio and clipping";
const KL: &str = "KL and entropy";
const AGG: &str = "Aggregation";
const SAMPLER: &str = "Sampler's distribution";
const ROLLOUT: &str = "Rollout correction and masks";
const COV: &str = "Covariance modes (clip_cov, kl_cov)";
const PRESETS: &str = "Presets (TRL's loss_type)";
pub(super) const EXEC: &str = "Execution";

/// The loss configuration as flags, with verl's names and defaults.
#[derive(Args, Debug, Clone)]
pub struct LossArgs {
    /// reinforce | ppo_clip | gspo | cispo | sapo | gpg | clip_cov | kl_cov | geo_mean
    /// (GMPO) | dppo_tv | dppo_kl (DPPO-Binary) | dro (needs --dro-beta) | vespo
    #[arg(long, default_value = "ppo_clip", help_heading = MODE)]
    mode: PolicyLossMode,
    /// dro's β_D (> 0), required by --mode dro (verl's policy_loss.dro_beta).
    #[arg(long, allow_negative_numbers = true, help_heading = MODE)]
    dro_beta: Option<f32>,
    /// sapo's gate temperature for positive advantages.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, help_heading = MODE)]
    tau_pos: f32,
    /// sapo's gate temperature for the others.
    #[arg(long, default_value_t = 1.05, allow_negative_numbers = true, help_heading = MODE)]
    tau_neg: f32,
    /// VESPO's gamma weight: k for A ≥ 0 (TRL's vespo_k_pos).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true, help_heading = MODE)]
    vespo_k_pos: f32,
    /// VESPO's gamma weight: λ for A ≥ 0 (TRL's vespo_lambda_pos).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true, help_heading = MODE)]
    vespo_lambda_pos: f32,
    /// VESPO's gamma weight: k for A < 0 (TRL's vespo_k_neg).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true, help_heading = MODE)]
    vespo_k_neg: f32,
    /// VESPO's gamma weight: λ for A < 0 (TRL's vespo_lambda_neg).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true, help_heading = MODE)]
    vespo_lambda_neg: f32,
    /// ε_low (with dppo_tv, dppo_kl: the threshold δ_low).
    #[arg(long, default_value_t = 0.2, help_heading = RATIO)]
    clip_ratio_low: f32,
    /// ε_high (with dppo_tv, dppo_kl: the threshold δ_high).
    #[arg(long, default_value_t = 0.2, help_heading = RATIO)]
    clip_ratio_high: f32,
    /// Dual-clip constant (> 1); off when absent. With dppo_tv, dppo_kl: the
    /// truncation C (3.0 when absent).
    #[arg(long, help_heading = RATIO)]
    clip_ratio_c: Option<f32>,
    /// TRL's two-sided clip δ (> 1) for --mode ppo_clip or gspo; off when absent;
    /// excludes --clip-ratio-c.
    #[arg(long, allow_negative_numbers = true, help_heading = RATIO)]
    delta: Option<f32>,
    /// token (default) | sequence (TRL's; --mode ppo_clip, cispo, sapo): the ratio of
    /// each token, or its sequence's geometric mean.
    #[arg(long, help_heading = RATIO)]
    importance_sampling_level: Option<ImportanceSamplingLevel>,
    /// k1 | k2 | k3 | abs (aliases kl | mse | low_var_kl), and each with a trailing `+`
    /// (straight-through: k1+ | k2+ | k3+ | abs+ | kl+ | mse+ | low_var_kl+).
    #[arg(long, default_value = "low_var_kl", help_heading = KL)]
    kl_loss_type: KlEstimator,
    /// β: the weight of the KL term against the input's ref_logprobs (0: no KL term).
    #[arg(long, default_value_t = 0.0, help_heading = KL)]
    kl_coef: f32,
    /// The KL term times the importance ratio (TRL's use_bias_correction_kl).
    #[arg(long, help_heading = KL)]
    bias_correction_kl: bool,
    /// γ: the weight of the entropy bonus, −γ·H per token (0: none).
    #[arg(long, default_value_t = 0.0, help_heading = KL)]
    entropy_coeff: f32,
    /// token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm |
    /// token-sum
    #[arg(long, default_value = "token-mean", help_heading = AGG)]
    loss_agg_mode: LossAggMode,
    /// token-mean's normaliser instead of Σ mask (data-parallel training).
    #[arg(long, help_heading = AGG)]
    global_normalizer: Option<f32>,
    /// seq-mean-token-sum-norm's L_norm (default: the sequence length S; with
    /// --positions shifted, S − 1, the positions that predict).
    #[arg(long, help_heading = AGG)]
    l_norm: Option<f32>,
    /// τ, the one temperature of every row (default 1); not with a `temperatures`
    /// tensor in the input.
    #[arg(long, help_heading = SAMPLER)]
    pub(super) temperature: Option<f32>,
    /// The sampler's logit softcap c > 0: every logit becomes c·tanh(x/c) before the
    /// temperature. Off when absent.
    #[arg(long, allow_negative_numbers = true, help_heading = SAMPLER)]
    pub(super) logit_softcap: Option<f32>,
    /// The sampler's top-k: keep the tokens with fewer than k larger values; 0 or −1:
    /// off.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, help_heading = SAMPLER)]
    pub(super) top_k: i32,
    /// The sampler's top-p in (0, 1]; 1: off.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, help_heading = SAMPLER)]
    pub(super) top_p: f32,
    /// The sampler's min-p in [0, 1]; 0: off.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, help_heading = SAMPLER)]
    pub(super) min_p: f32,
    /// Rollout correction level: token | sequence | geometric (needs rollout_logprobs).
    #[arg(long, help_heading = ROLLOUT)]
    rollout_is: Option<RolloutLevel>,
    /// truncate (TIS) | mask (MIS).
    #[arg(long, help_heading = ROLLOUT)]
    rollout_is_mode: Option<RolloutMode>,
    /// C_hi (default 2.0).
    #[arg(long, allow_negative_numbers = true, help_heading = ROLLOUT)]
    rollout_is_threshold: Option<f32>,
    /// C_lo (default 0 for truncate, 1/C_hi for mask).
    #[arg(long, allow_negative_numbers = true, help_heading = ROLLOUT)]
    rollout_is_threshold_lower: Option<f32>,
    /// θ ≥ 0: the off-policy sequence mask (DeepSeek-V3.2), dropping the policy term of
    /// a sequence with A < 0 whose mean σ − logp exceeds θ; σ from the input's
    /// rollout_logprobs when present (with or without --rollout-is), else
    /// old_logprobs. Off when absent.
    #[arg(long, allow_negative_numbers = true, help_heading = ROLLOUT)]
    off_policy_mask_threshold: Option<f32>,
    /// ρ_H: keep the policy term of the tokens whose entropy is at least the (1 − ρ_H)
    /// quantile of the batch's, in (0, 1].
    #[arg(long, allow_negative_numbers = true, help_heading = ROLLOUT)]
    top_entropy_quantile: Option<f32>,
    /// With --top-entropy-quantile: keep the ⌈ρ_H·N⌉ highest and aggregate the policy
    /// term over them only.
    #[arg(long, help_heading = ROLLOUT)]
    top_entropy_renormalize: bool,
    /// clip_cov: the share of tokens to cut, in (0, 1].
    #[arg(long, default_value_t = 0.0002, allow_negative_numbers = true, help_heading = COV)]
    clip_cov_ratio: f32,
    /// clip_cov: candidates have clip_cov_lb < cov < clip_cov_ub.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, help_heading = COV)]
    clip_cov_lb: f32,
    /// clip_cov: the upper bound of a candidate's covariance (see --clip-cov-lb).
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true, help_heading = COV)]
    clip_cov_ub: f32,
    /// kl_cov: the share of tokens to penalise, in (0, 1].
    #[arg(long, default_value_t = 0.0002, allow_negative_numbers = true, help_heading = COV)]
    kl_cov_ratio: f32,
    /// kl_cov's κ.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true, help_heading = COV)]
    ppo_kl_coef: f32,
    /// clip_cov's seed for its choice among candidates.
    #[arg(long, default_value_t = 0, help_heading = COV)]
    seed: u32,
    /// TRL's loss_type as a preset: grpo | bnpo | dr_grpo | dapo | cispo | sapo | luspo
    /// (--mode ppo_clip, --importance-sampling-level sequence, seq-mean-token-sum over
    /// every sequence) | vespo (--mode vespo, token-mean).
    #[arg(long, help_heading = PRESETS)]
    loss_type: Option<TrlLossType>,
    /// dr_grpo's L_norm.
    #[arg(long, help_heading = PRESETS)]
    max_completion_length: Option<u32>,
}

impl LossArgs {
    /// The configuration the flags give; a bad value is an error naming its flag.
    pub fn config(&self) -> Result<LossConfig, Error> {
        let mut cfg = LossConfig {
            mode: self.mode,
            clip_ratio_low: self.clip_ratio_low,
            clip_ratio_high: self.clip_ratio_high,
            clip_ratio_c: self.clip_ratio_c,
            kl_loss_type: self.kl_loss_type,
            kl_coef: self.kl_coef,
            entropy_coeff: self.entropy_coeff,
            loss_agg_mode: self.loss_agg_mode,
            global_normalizer: self.global_normalizer,
            l_norm: self.l_norm,
            temperature: self.temperature.unwrap_or(1.0),
            tau_pos: self.tau_pos,
            tau_neg: self.tau_neg,
            clip_cov_ratio: self.clip_cov_ratio,
            clip_cov_lb: self.clip_cov_lb,
            clip_cov_ub: self.clip_cov_ub,
            kl_cov_ratio: self.kl_cov_ratio,
            ppo_kl_coef: self.ppo_kl_coef,
            seed: self.seed,
            rollout_correction: self.rollout()?,
            top_entropy_quantile: self.top_entropy_quantile,
            top_entropy_renormalize: self.top_entropy_renormalize,
            count_empty_sequences: false,
            dro_beta: self.dro_beta,
            vespo_k_pos: self.vespo_k_pos,
            vespo_lambda_pos: self.vespo_lambda_pos,
            vespo_k_neg: self.vespo_k_neg,
            vespo_lambda_neg: self.vespo_lambda_neg,
            delta: self.delta,
            importance_sampling_level: self.importance_sampling_level.unwrap_or_default(),
            off_policy_mask_threshold: self.off_policy_mask_threshold,
            use_bias_correction_kl: self.bias_correction_kl,
            logit_softcap: self.logit_softcap,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
        };
        if let Some(t) = self.loss_type {
            if t == TrlLossType::Luspo
                && self.importance_sampling_level == Some(ImportanceSamplingLevel::Token)
            {
                return Err(bad(
                    "--importance-sampling-level",
                    "--loss-type luspo is the sequence level: drop `token` (or the preset)",
                ));
            }
            cfg = cfg
                .with_loss_type(t, self.max_completion_length)
                .map_err(flag)?;
        } else if self.max_completion_length.is_some() {
            return Err(bad(
                "--max-completion-length",
                "is dr_grpo's L_norm: give it with --loss-type dr_grpo (or use --l-norm)",
            ));
        }
        cfg.validate().map_err(flag)?;
        Ok(cfg)
    }

    /// The rollout correction the `--rollout-is*` flags give.
    fn rollout(&self) -> Result<Option<RolloutCorrection>, Error> {
        match (
            self.rollout_is,
            self.rollout_is_mode,
            self.rollout_is_threshold,
            self.rollout_is_threshold_lower,
        ) {
            (None, None, None, None) => Ok(None),
            (None, ..) => Err(bad(
                "--rollout-is",
                "the rollout options need a level: --rollout-is token|sequence|geometric",
            )),
            (Some(level), mode, hi, lo) => {
                let mut rc = RolloutCorrection::new(level, mode.unwrap_or_default());
                if let Some(hi) = hi {
                    rc.threshold = hi;
                }
                rc.threshold_lower = lo;
                Ok(Some(rc))
            }
        }
    }
}

/// A configuration error named by its field, renamed to the flag that sets it.
pub(super) fn flag(e: Error) -> Error {
    match e {
        Error::InvalidArgument { arg, reason } => {
            let name = match arg {
                "rollout_is_threshold" => "--rollout-is-threshold",
                "rollout_is_threshold_lower" => "--rollout-is-threshold-lower",
                "rollout_is" => "--rollout-is",
                "rollout_is_mode" => "--rollout-is-mode",
                "tau_pos" => "--tau-pos",
                "tau_neg" => "--tau-neg",
                "clip_cov_ratio" => "--clip-cov-ratio",
                "clip_cov_lb" => "--clip-cov-lb",
                "clip_cov_ub" => "--clip-cov-ub",
                "kl_cov_ratio" => "--kl-cov-ratio",
                "ppo_kl_coef" => "--ppo-kl-coef",
                "top_entropy_quantile" => "--top-entropy-quantile",
                "top_entropy_renormalize" => "--top-entropy-renormalize",
                "max_completion_length" => "--max-completion-length",
                "loss_type" => "--loss-type",
                "temperature" => "--temperature",
                "logit_softcap" => "--logit-softcap",
                "top_k" => "--top-k",
                "top_p" => "--top-p",
                "min_p" => "--min-p",
                "clip_ratio_low" => "--clip-ratio-low",
                "clip_ratio_high" => "--clip-ratio-high",
                "clip_ratio_c" => "--clip-ratio-c",
                "kl_coef" => "--kl-coef",
                "entropy_coeff" => "--entropy-coeff",
                "global_normalizer" => "--global-normalizer",
                "l_norm" => "--l-norm",
                "mode" => "--mode",
                "kl_loss_type" => "--kl-loss-type",
                "loss_agg_mode" => "--loss-agg-mode",
                "seed" => "--seed",
                "dro_beta" => "--dro-beta",
                "vespo_k_pos" => "--vespo-k-pos",
                "vespo_lambda_pos" => "--vespo-lambda-pos",
                "vespo_k_neg" => "--vespo-k-neg",
                "vespo_lambda_neg" => "--vespo-lambda-neg",
                "delta" => "--delta",
                "importance_sampling_level" => "--importance-sampling-level",
                "off_policy_mask_threshold" => "--off-policy-mask-threshold",
                "use_bias_correction_kl" => "--bias-correction-kl",
                other => other,
            };
            Error::InvalidArgument { arg: name, reason }
        }
        other => other,
    }
}
