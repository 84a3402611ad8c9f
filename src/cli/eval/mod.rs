//! `eval`: the loss, log-probs, entropies, gradient and metrics of a safetensors file,
//! the way a PyTorch user checks this library against their own code.

use std::path::PathBuf;

use clap::Args;
use safetensors::tensor::SafeTensors;
use wgpu_policy_loss::{
    Context, DType, Error, ImportanceSamplingLevel, KlEstimator, LossAggMode, LossConfig,
    PolicyLossMode, RolloutCorrection, RolloutLevel, RolloutMode, TrlLossType,
};

use super::CliResult;

mod input;
mod output;
mod parts;
mod primitive;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Input tensors: logits (or hidden [T, H] / [B, S, H] and lm_head [V, H], the
    /// fused linear head: never both), targets, mask, advantages [, old_logprobs,
    /// ref_logprobs, rollout_logprobs].
    #[arg(long)]
    input: PathBuf,
    /// Where to write loss, logprobs, entropy, lse, the metrics and grad_logits (with
    /// hidden: grad_hidden and grad_lm_head instead).
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    loss: LossArgs,
    /// Dtype of grad_logits (or of grad_hidden and grad_lm_head).
    #[arg(long, default_value = "f32")]
    grad_dtype: DType,
    /// With hidden and lm_head: rows of logits held at once (≥ 1; default: what fits
    /// the device). The outputs do not depend on it beyond f32 rounding.
    #[arg(long)]
    head_chunk: Option<u32>,
    /// The adapter to run on (see `--help`: a backend, `lavapipe`, or part of a name).
    #[arg(long)]
    adapter: Option<String>,
    /// Split the rows into this many buffers, each of whole sequences ([B, S, V] logits,
    /// B ≥ K), and compute the loss over them as one batch: the outputs are those of
    /// one buffer.
    #[arg(long, default_value_t = 1)]
    parts: usize,
    /// Split the vocabulary into this many uneven shards (widths growing with the
    /// rank) and compute the loss through the sharded API on one device: each shard's
    /// partial statistics, gathered, then each shard's loss and gradient columns. The
    /// outputs are as without the flag.
    #[arg(long)]
    vocab_shards: Option<u32>,
}

/// The loss configuration as flags, with verl's names and defaults.
#[derive(Args, Debug, Clone)]
pub struct LossArgs {
    /// reinforce | ppo_clip | gspo | cispo | sapo | gpg | clip_cov | kl_cov | geo_mean
    /// (GMPO) | dppo_tv | dppo_kl (DPPO-Binary) | dro (needs --dro-beta) | vespo
    #[arg(long, default_value = "ppo_clip")]
    mode: PolicyLossMode,
    /// ε_low (with dppo_tv, dppo_kl: the threshold δ_low).
    #[arg(long, default_value_t = 0.2)]
    clip_ratio_low: f32,
    /// ε_high (with dppo_tv, dppo_kl: the threshold δ_high).
    #[arg(long, default_value_t = 0.2)]
    clip_ratio_high: f32,
    /// Dual-clip constant (> 1); off when absent. With dppo_tv, dppo_kl: the
    /// truncation C (3.0 when absent).
    #[arg(long)]
    clip_ratio_c: Option<f32>,
    /// k1 | k2 | k3 | abs (aliases kl | mse | low_var_kl), and each with a trailing `+`
    /// (straight-through: k1+ | k2+ | k3+ | abs+ | kl+ | mse+ | low_var_kl+).
    #[arg(long, default_value = "low_var_kl")]
    kl_loss_type: KlEstimator,
    #[arg(long, default_value_t = 0.0)]
    kl_coef: f32,
    #[arg(long, default_value_t = 0.0)]
    entropy_coeff: f32,
    /// token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm |
    /// token-sum
    #[arg(long, default_value = "token-mean")]
    loss_agg_mode: LossAggMode,
    /// token-mean's normaliser instead of Σ mask (data-parallel training).
    #[arg(long)]
    global_normalizer: Option<f32>,
    /// seq-mean-token-sum-norm's L_norm (default: the sequence length).
    #[arg(long)]
    l_norm: Option<f32>,
    /// τ, the one temperature of every row (default 1); not with a `temperatures`
    /// tensor in the input.
    #[arg(long)]
    temperature: Option<f32>,
    /// The sampler's logit softcap c > 0: every logit becomes c·tanh(x/c) before the
    /// temperature. Off when absent.
    #[arg(long, allow_negative_numbers = true)]
    logit_softcap: Option<f32>,
    /// The sampler's top-k: keep the tokens with fewer than k larger values; 0 or −1:
    /// off.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    top_k: i32,
    /// The sampler's top-p in (0, 1]; 1: off.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// The sampler's min-p in [0, 1]; 0: off.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_p: f32,
    /// sapo's gate temperature for positive advantages.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    tau_pos: f32,
    /// sapo's gate temperature for the others.
    #[arg(long, default_value_t = 1.05, allow_negative_numbers = true)]
    tau_neg: f32,
    /// clip_cov: the share of tokens to cut, in (0, 1].
    #[arg(long, default_value_t = 0.0002, allow_negative_numbers = true)]
    clip_cov_ratio: f32,
    /// clip_cov: candidates have clip_cov_lb < cov < clip_cov_ub.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    clip_cov_lb: f32,
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    clip_cov_ub: f32,
    /// kl_cov: the share of tokens to penalise, in (0, 1].
    #[arg(long, default_value_t = 0.0002, allow_negative_numbers = true)]
    kl_cov_ratio: f32,
    /// kl_cov's κ.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    ppo_kl_coef: f32,
    /// clip_cov's seed for its choice among candidates.
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Rollout correction level: token | sequence | geometric (needs rollout_logprobs).
    #[arg(long)]
    rollout_is: Option<RolloutLevel>,
    /// truncate (TIS) | mask (MIS).
    #[arg(long)]
    rollout_is_mode: Option<RolloutMode>,
    /// C_hi (default 2.0).
    #[arg(long, allow_negative_numbers = true)]
    rollout_is_threshold: Option<f32>,
    /// C_lo (default 0 for truncate, 1/C_hi for mask).
    #[arg(long, allow_negative_numbers = true)]
    rollout_is_threshold_lower: Option<f32>,
    /// ρ_H: keep the policy term of the tokens whose entropy is at least the (1 − ρ_H)
    /// quantile of the batch's, in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    top_entropy_quantile: Option<f32>,
    /// With --top-entropy-quantile: keep the ⌈ρ_H·N⌉ highest and aggregate the policy
    /// term over them only.
    #[arg(long)]
    top_entropy_renormalize: bool,
    /// TRL's loss_type as a preset: grpo | bnpo | dr_grpo | dapo | cispo | sapo | luspo
    /// (--mode ppo_clip, --importance-sampling-level sequence, seq-mean-token-sum over
    /// every sequence) | vespo (--mode vespo, token-mean).
    #[arg(long)]
    loss_type: Option<TrlLossType>,
    /// dr_grpo's L_norm.
    #[arg(long)]
    max_completion_length: Option<u32>,
    /// dro's β_D (> 0), required by --mode dro (verl's policy_loss.dro_beta).
    #[arg(long, allow_negative_numbers = true)]
    dro_beta: Option<f32>,
    /// VESPO's gamma weight: k for A ≥ 0 (TRL's vespo_k_pos).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    vespo_k_pos: f32,
    /// VESPO's gamma weight: λ for A ≥ 0 (TRL's vespo_lambda_pos).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    vespo_lambda_pos: f32,
    /// VESPO's gamma weight: k for A < 0 (TRL's vespo_k_neg).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    vespo_k_neg: f32,
    /// VESPO's gamma weight: λ for A < 0 (TRL's vespo_lambda_neg).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    vespo_lambda_neg: f32,
    /// TRL's two-sided clip δ (> 1) for --mode ppo_clip or gspo; off when absent;
    /// excludes --clip-ratio-c.
    #[arg(long, allow_negative_numbers = true)]
    delta: Option<f32>,
    /// token (default) | sequence (TRL's; --mode ppo_clip, cispo, sapo): the ratio of
    /// each token, or its sequence's geometric mean.
    #[arg(long)]
    importance_sampling_level: Option<ImportanceSamplingLevel>,
    /// θ ≥ 0: the off-policy sequence mask (DeepSeek-V3.2), dropping the policy term of
    /// a sequence with A < 0 whose mean σ − logp exceeds θ; σ from the input's
    /// rollout_logprobs when present (with or without --rollout-is), else
    /// old_logprobs. Off when absent.
    #[arg(long, allow_negative_numbers = true)]
    off_policy_mask_threshold: Option<f32>,
    /// The KL term times the importance ratio (TRL's use_bias_correction_kl).
    #[arg(long)]
    bias_correction_kl: bool,
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

pub(super) fn bad(arg: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        arg,
        reason: reason.into(),
    }
}

/// The context for `--adapter`, or wgpu's default choice.
pub fn context(adapter: Option<&str>) -> Result<Context, Error> {
    match adapter {
        Some(name) => Context::from_adapter(&Context::adapter_named(name)?),
        None => Context::new(),
    }
}

/// `eval`; `given` are the ids of the flags given on the command line.
pub fn run(args: &EvalArgs, given: &[String]) -> CliResult {
    // the file's bytes go once its tensors are read (a model's lm_head is a gigabyte)
    let input = {
        let bytes = std::fs::read(&args.input)
            .map_err(|e| format!("cannot read {}: {e}", args.input.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("{} is not a safetensors file: {e}", args.input.display()))?;
        if primitive::wanted(&st) {
            return primitive::run(args, given, &st);
        }
        input::Input::read(&st)?
    };
    let config = args.loss.config()?;
    if config.rollout_correction.is_some() && input.rollout.is_none() {
        return Err(bad(
            "--rollout-is",
            "needs the sampler's log-probs: a `rollout_logprobs` tensor in the input",
        )
        .into());
    }
    if input.temps.is_some() && args.loss.temperature.is_some() {
        return Err(bad(
            "--temperature",
            "cannot be given with a `temperatures` tensor in the input: the tensor holds \
             every row's temperature",
        )
        .into());
    }
    let whole = input.part();
    // a bad mask, advantage or log-prob names its tensor and row before any device opens
    whole.check(&config)?;
    if let Some(head) = input.head(args.head_chunk) {
        return run_head(args, &config, &input, &head);
    }
    if args.head_chunk.is_some() {
        return Err(bad(
            "--head-chunk",
            "is the fused head's chunk: it needs hidden and lm_head in the input, not logits",
        )
        .into());
    }
    let shape = (input.targets.len(), input.vocab);
    let kept = parts::split_kept(input.kept(), shape, input.seqs, args.parts)?;
    let parts = parts::split(&whole, input.seqs, args.parts, &kept)?;
    let ctx = context(args.adapter.as_deref())?;
    let out = match args.vocab_shards {
        None => ctx.policy_loss_parts(&config, &parts, Some(args.grad_dtype))?,
        Some(_) if args.parts != 1 => {
            return Err(bad(
                "--vocab-shards",
                "cannot be combined with --parts: give one of them",
            )
            .into())
        }
        Some(k) => {
            let shards = parts::uneven_shards(input.vocab as u32, k)?;
            parts::sharded(&ctx, &config, &whole, shards, args.grad_dtype)?
        }
    };
    let grad = out.grad.as_ref().ok_or("no gradient came back")?;
    let grads = [("grad_logits", input.shape.clone(), grad)];
    output::write(&out, &input.lead, &grads, &args.output)
}

/// `eval` of the fused head: the loss from hidden and lm_head, its two gradients.
fn run_head(
    args: &EvalArgs,
    config: &LossConfig,
    input: &input::Input,
    head: &wgpu_policy_loss::HostHead<'_>,
) -> CliResult {
    for (flag, given) in [
        ("--parts", args.parts != 1),
        ("--vocab-shards", args.vocab_shards.is_some()),
    ] {
        if given {
            return Err(bad(
                flag,
                "splits logits: it cannot be used with hidden and lm_head",
            )
            .into());
        }
    }
    if args.head_chunk == Some(0) {
        return Err(bad("--head-chunk", "must be at least 1").into());
    }
    let input::Source::Head { shape, h, .. } = &input.source else {
        return Err("not a head input".into());
    };
    let ctx = context(args.adapter.as_deref())?;
    let out = ctx.policy_loss_head(config, head, Some(args.grad_dtype))?;
    let gh = out.grad_hidden.as_ref().ok_or("no grad_hidden came back")?;
    let gw = out
        .grad_lm_head
        .as_ref()
        .ok_or("no grad_lm_head came back")?;
    let grads = [
        ("grad_hidden", shape.clone(), gh),
        ("grad_lm_head", vec![input.vocab, *h], gw),
    ];
    output::write(&out.loss, &input.lead, &grads, &args.output)
}
