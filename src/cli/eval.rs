//! `eval`: the loss, log-probs, entropies, gradient and metrics of a safetensors file,
//! the way a PyTorch user checks this library against their own code.

use std::path::PathBuf;

use clap::Args;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wgpu_policy_loss::half::{bf16, f16};
use wgpu_policy_loss::{
    Context, DType, Error, HostBatch, HostLogits, HostPart, KlEstimator, LossAggMode, LossConfig,
    PolicyLossMode, RolloutCorrection, RolloutLevel, RolloutMode, TrlLossType, VocabShards,
};

use super::CliResult;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Input tensors: logits, targets, mask, advantages [, old_logprobs, ref_logprobs].
    #[arg(long)]
    input: PathBuf,
    /// Where to write loss, logprobs, entropy, grad_logits and the metrics.
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    loss: LossArgs,
    /// Dtype of grad_logits.
    #[arg(long, default_value = "f32")]
    grad_dtype: DType,
    /// Run on the first adapter whose name contains this (case-insensitive).
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
    /// reinforce | ppo_clip | gspo | cispo | sapo | gpg | clip_cov | kl_cov
    #[arg(long, default_value = "ppo_clip")]
    mode: PolicyLossMode,
    #[arg(long, default_value_t = 0.2)]
    clip_ratio_low: f32,
    #[arg(long, default_value_t = 0.2)]
    clip_ratio_high: f32,
    /// Dual-clip constant (> 1); off when absent.
    #[arg(long)]
    clip_ratio_c: Option<f32>,
    /// k1 | k2 | k3 (aliases kl | mse | low_var_kl)
    #[arg(long, default_value = "low_var_kl")]
    kl_loss_type: KlEstimator,
    #[arg(long, default_value_t = 0.0)]
    kl_coef: f32,
    #[arg(long, default_value_t = 0.0)]
    entropy_coeff: f32,
    /// token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
    #[arg(long, default_value = "token-mean")]
    loss_agg_mode: LossAggMode,
    /// token-mean's normaliser instead of Σ mask (data-parallel training).
    #[arg(long)]
    global_normalizer: Option<f32>,
    /// seq-mean-token-sum-norm's L_norm (default: the sequence length).
    #[arg(long)]
    l_norm: Option<f32>,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
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
    /// TRL's loss_type as a preset: grpo | bnpo | dr_grpo | dapo | cispo | sapo.
    #[arg(long)]
    loss_type: Option<TrlLossType>,
    /// dr_grpo's L_norm.
    #[arg(long)]
    max_completion_length: Option<u32>,
}

impl LossArgs {
    /// The configuration the flags give; a bad value is an error naming its flag.
    pub fn config(&self) -> Result<LossConfig, Error> {
        let rollout = match (
            self.rollout_is,
            self.rollout_is_mode,
            self.rollout_is_threshold,
            self.rollout_is_threshold_lower,
        ) {
            (None, None, None, None) => None,
            (None, ..) => {
                return Err(bad(
                    "--rollout-is",
                    "the rollout options need a level: --rollout-is token|sequence|geometric",
                ))
            }
            (Some(level), mode, hi, lo) => {
                let mut rc = RolloutCorrection::new(level, mode.unwrap_or_default());
                if let Some(hi) = hi {
                    rc.threshold = hi;
                }
                rc.threshold_lower = lo;
                Some(rc)
            }
        };
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
            temperature: self.temperature,
            tau_pos: self.tau_pos,
            tau_neg: self.tau_neg,
            clip_cov_ratio: self.clip_cov_ratio,
            clip_cov_lb: self.clip_cov_lb,
            clip_cov_ub: self.clip_cov_ub,
            kl_cov_ratio: self.kl_cov_ratio,
            ppo_kl_coef: self.ppo_kl_coef,
            seed: self.seed,
            rollout_correction: rollout,
            top_entropy_quantile: self.top_entropy_quantile,
            top_entropy_renormalize: self.top_entropy_renormalize,
            count_empty_sequences: false,
        };
        if let Some(t) = self.loss_type {
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
}

/// A configuration error named by its field, renamed to the flag that sets it.
fn flag(e: Error) -> Error {
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
                "clip_ratio_low" => "--clip-ratio-low",
                "clip_ratio_high" => "--clip-ratio-high",
                "clip_ratio_c" => "--clip-ratio-c",
                "kl_coef" => "--kl-coef",
                "entropy_coeff" => "--entropy-coeff",
                "global_normalizer" => "--global-normalizer",
                "l_norm" => "--l-norm",
                other => other,
            };
            Error::InvalidArgument { arg: name, reason }
        }
        other => other,
    }
}

fn bad(arg: &'static str, reason: impl Into<String>) -> Error {
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

fn tensor<'a>(st: &SafeTensors<'a>, name: &'static str) -> Result<Option<TensorView<'a>>, Error> {
    match st.tensor(name) {
        Ok(t) => Ok(Some(t)),
        Err(safetensors::SafeTensorError::TensorNotFound(_)) => Ok(None),
        Err(e) => Err(bad(name, e.to_string())),
    }
}

fn required<'a>(st: &SafeTensors<'a>, name: &'static str) -> Result<TensorView<'a>, Error> {
    tensor(st, name)?.ok_or_else(|| bad(name, "missing from the input file"))
}

fn expect_shape(name: &'static str, t: &TensorView<'_>, shape: &[usize]) -> Result<(), Error> {
    if t.shape() != shape {
        return Err(bad(
            name,
            format!("has shape {:?}, expected {shape:?}", t.shape()),
        ));
    }
    Ok(())
}

fn f32s(name: &'static str, t: &TensorView<'_>) -> Result<Vec<f32>, Error> {
    match t.dtype() {
        Dtype::F32 => Ok(bytemuck::pod_collect_to_vec(t.data())),
        d => Err(bad(name, format!("has dtype {d:?}, expected F32"))),
    }
}

fn mask_values(t: &TensorView<'_>) -> Result<Vec<f32>, Error> {
    match t.dtype() {
        Dtype::F32 => Ok(bytemuck::pod_collect_to_vec(t.data())),
        Dtype::U8 | Dtype::BOOL => Ok(t.data().iter().map(|&b| b as f32).collect()),
        d => Err(bad(
            "mask",
            format!("has dtype {d:?}, expected F32, U8 or BOOL"),
        )),
    }
}

/// Token ids as u32; an id is only checked (and must lie in [0, V)) where the mask is > 0.
fn target_ids(t: &TensorView<'_>, mask: &[f32], vocab: usize) -> Result<Vec<u32>, Error> {
    let ids: Vec<i64> = match t.dtype() {
        Dtype::I64 => bytemuck::pod_collect_to_vec(t.data()),
        Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(t.data())
            .into_iter()
            .map(i64::from)
            .collect(),
        Dtype::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(t.data())
            .into_iter()
            .map(i64::from)
            .collect(),
        d => {
            return Err(bad(
                "targets",
                format!("has dtype {d:?}, expected I64, I32 or U32"),
            ))
        }
    };
    ids.iter()
        .zip(mask)
        .enumerate()
        .map(|(row, (&id, &m))| {
            if m > 0.0 && !(0..vocab as i64).contains(&id) {
                Err(Error::TargetOutOfRange {
                    row,
                    id,
                    vocab: vocab as u32,
                })
            } else {
                Ok(u32::try_from(id).unwrap_or(u32::MAX))
            }
        })
        .collect()
}

/// `batch` of `seqs` sequences in `k` parts of whole sequences, as even as they come.
fn split<'a>(part: &HostPart<'a>, seqs: usize, k: usize) -> Result<Vec<HostPart<'a>>, Error> {
    let batch = &part.batch;
    if k == 0 || k > seqs {
        return Err(bad(
            "--parts",
            format!(
                "{k} parts of {seqs} sequence(s): each part holds whole sequences, so give \
                 1 to {seqs} parts (or [B, S, V] logits with B >= {k})"
            ),
        ));
    }
    let rows = batch.targets.len();
    let rps = rows / seqs;
    let v = batch.vocab as usize;
    let per_token = batch.advantages.len() == rows;
    Ok((0..k)
        .map(|i| {
            let (s0, s1) = (i * seqs / k, (i + 1) * seqs / k);
            let (r0, r1) = (s0 * rps, s1 * rps);
            let logits = match batch.logits {
                HostLogits::F32(x) => HostLogits::F32(&x[r0 * v..r1 * v]),
                HostLogits::F16(x) => HostLogits::F16(&x[r0 * v..r1 * v]),
                HostLogits::Bf16(x) => HostLogits::Bf16(&x[r0 * v..r1 * v]),
            };
            HostPart {
                batch: HostBatch {
                    logits,
                    targets: &batch.targets[r0..r1],
                    mask: &batch.mask[r0..r1],
                    advantages: if per_token {
                        &batch.advantages[r0..r1]
                    } else {
                        &batch.advantages[s0..s1]
                    },
                    old_logprobs: batch.old_logprobs.map(|x| &x[r0..r1]),
                    ref_logprobs: batch.ref_logprobs.map(|x| &x[r0..r1]),
                    ..*batch
                },
                rollout_logprobs: part.rollout_logprobs.map(|x| &x[r0..r1]),
            }
        })
        .collect())
}

/// `k` shards of `vocab` columns whose widths grow with the rank (1 : 2 : … : k), each
/// at least one column: the uneven split a test of the sharded path wants.
fn uneven_shards(vocab: u32, k: u32) -> Result<VocabShards, Error> {
    if k == 0 || k > vocab {
        return Err(bad(
            "--vocab-shards",
            format!("{k} shards of a vocabulary of {vocab}: give 1 to {vocab}"),
        ));
    }
    let (v, k64) = (vocab as u64, k as u64);
    let total = k64 * (k64 + 1) / 2;
    let mut ends: Vec<u32> = (1..=k64)
        .map(|i| (v * (i * (i + 1) / 2) / total) as u32)
        .collect();
    // every shard at least one column, the last ending at the vocabulary
    for i in 0..k as usize {
        let floor = if i == 0 { 1 } else { ends[i - 1] + 1 };
        ends[i] = ends[i].max(floor).min(vocab - (k - 1 - i as u32));
    }
    let widths: Vec<u32> = ends
        .iter()
        .scan(0, |start, &end| {
            let w = end - *start;
            *start = end;
            Some(w)
        })
        .collect();
    VocabShards::new(&widths).map_err(|e| bad("--vocab-shards", e.to_string()))
}

/// The loss of `whole` through the sharded API, every shard on `ctx`: each shard's
/// partials gathered in rank order, then each shard's loss and gradient columns, put
/// back together as one `[rows, V]` gradient. The ranks' metrics and per-row outputs
/// have the same bits (they merged the same partials); rank 0's are returned.
fn sharded(
    ctx: &Context,
    config: &LossConfig,
    whole: &HostPart<'_>,
    shards: VocabShards,
    args: &EvalArgs,
) -> Result<wgpu_policy_loss::HostLoss, Box<dyn std::error::Error>> {
    let batch = &whole.batch;
    let vocab = batch.vocab as usize;
    let rows = batch.targets.len();
    let pieces: Vec<Columns> = (0..shards.len())
        .map(|k| Columns::of(&batch.logits, vocab, shards.range(k)))
        .collect();
    let mut gathered = Vec::with_capacity(shards.gathered_bytes(rows as u32) as usize / 4);
    for (k, piece) in pieces.iter().enumerate() {
        gathered.extend(ctx.shard_partials(config, &shards, k, piece.host(), batch.targets)?);
    }
    let elem = args.grad_dtype.size() as usize;
    let mut grad = vec![0u8; rows * vocab * elem];
    let mut first = None;
    for (k, piece) in pieces.iter().enumerate() {
        let part = HostPart {
            batch: HostBatch {
                logits: piece.host(),
                vocab: shards.width(k),
                ..*batch
            },
            rollout_logprobs: whole.rollout_logprobs,
        };
        let out =
            ctx.policy_loss_shard(config, &shards, k, part, &gathered, Some(args.grad_dtype))?;
        let g = out.grad.as_ref().ok_or("no gradient came back")?;
        let (o, w) = (
            shards.offset(k) as usize * elem,
            shards.width(k) as usize * elem,
        );
        for (r, src) in g.bytes.chunks(w).enumerate() {
            grad[r * vocab * elem + o..][..w].copy_from_slice(src);
        }
        first.get_or_insert(out);
    }
    let mut out = first.ok_or("no shard")?;
    if let Some(g) = out.grad.as_mut() {
        g.bytes = grad;
    }
    Ok(out)
}

/// One shard's columns of host logits, in their dtype.
enum Columns {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Columns {
    fn of(logits: &HostLogits<'_>, vocab: usize, cols: std::ops::Range<u32>) -> Self {
        fn take<T: Copy>(x: &[T], vocab: usize, cols: &std::ops::Range<u32>) -> Vec<T> {
            x.chunks(vocab)
                .flat_map(|row| &row[cols.start as usize..cols.end as usize])
                .copied()
                .collect()
        }
        match logits {
            HostLogits::F32(x) => Columns::F32(take(x, vocab, &cols)),
            HostLogits::F16(x) => Columns::F16(take(x, vocab, &cols)),
            HostLogits::Bf16(x) => Columns::Bf16(take(x, vocab, &cols)),
        }
    }

    fn host(&self) -> HostLogits<'_> {
        match self {
            Columns::F32(x) => HostLogits::F32(x),
            Columns::F16(x) => HostLogits::F16(x),
            Columns::Bf16(x) => HostLogits::Bf16(x),
        }
    }
}

pub fn run(args: &EvalArgs) -> CliResult {
    let bytes = std::fs::read(&args.input)
        .map_err(|e| format!("cannot read {}: {e}", args.input.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{} is not a safetensors file: {e}", args.input.display()))?;

    let logits_t = required(&st, "logits")?;
    let shape = logits_t.shape().to_vec();
    let (lead, vocab, rows_per_seq) = match shape.as_slice() {
        [t, v] => (vec![*t], *v, None),
        [b, s, v] => (vec![*b, *s], *v, Some(*s as u32)),
        _ => {
            return Err(bad(
                "logits",
                format!("has shape {shape:?}, expected [T, V] or [B, S, V]"),
            )
            .into())
        }
    };
    let rows: usize = lead.iter().product();
    let seqs = if lead.len() == 2 { lead[0] } else { 1 };
    if vocab == 0 || rows == 0 {
        return Err(bad("logits", format!("has an empty shape {shape:?}")).into());
    }
    let (f32_logits, f16_logits, bf16_logits);
    let logits = match logits_t.dtype() {
        Dtype::F32 => {
            f32_logits = bytemuck::pod_collect_to_vec::<u8, f32>(logits_t.data());
            HostLogits::F32(&f32_logits)
        }
        Dtype::F16 => {
            f16_logits = bytemuck::pod_collect_to_vec::<u8, f16>(logits_t.data());
            HostLogits::F16(&f16_logits)
        }
        Dtype::BF16 => {
            bf16_logits = bytemuck::pod_collect_to_vec::<u8, bf16>(logits_t.data());
            HostLogits::Bf16(&bf16_logits)
        }
        d => {
            return Err(bad(
                "logits",
                format!("has dtype {d:?}, expected F32, F16 or BF16"),
            )
            .into())
        }
    };

    let mask_t = required(&st, "mask")?;
    expect_shape("mask", &mask_t, &lead)?;
    let mask = mask_values(&mask_t)?;
    let targets_t = required(&st, "targets")?;
    expect_shape("targets", &targets_t, &lead)?;
    let targets = target_ids(&targets_t, &mask, vocab)?;
    let adv_t = required(&st, "advantages")?;
    if adv_t.shape() != [seqs] && adv_t.shape() != lead.as_slice() {
        return Err(bad(
            "advantages",
            format!(
                "has shape {:?}, expected [{seqs}] or {lead:?}",
                adv_t.shape()
            ),
        )
        .into());
    }
    let advantages = f32s("advantages", &adv_t)?;
    let optional = |name: &'static str| -> Result<Option<Vec<f32>>, Error> {
        match tensor(&st, name)? {
            Some(t) => {
                expect_shape(name, &t, &lead)?;
                Ok(Some(f32s(name, &t)?))
            }
            None => Ok(None),
        }
    };
    let old = optional("old_logprobs")?;
    let refp = optional("ref_logprobs")?;
    let rollout = optional("rollout_logprobs")?;

    let config = args.loss.config()?;
    if config.rollout_correction.is_some() && rollout.is_none() {
        return Err(bad(
            "--rollout-is",
            "needs the sampler's log-probs: a `rollout_logprobs` tensor in the input",
        )
        .into());
    }
    let batch = HostBatch {
        logits,
        vocab: vocab as u32,
        rows_per_seq,
        targets: &targets,
        mask: &mask,
        advantages: &advantages,
        old_logprobs: old.as_deref(),
        ref_logprobs: refp.as_deref(),
    };
    let whole = HostPart {
        batch,
        rollout_logprobs: rollout.as_deref(),
    };
    // a bad mask, advantage or log-prob names its tensor and row before any device opens
    whole.check(&config)?;
    let parts = split(&whole, seqs, args.parts)?;
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
        Some(k) => sharded(&ctx, &config, &whole, uneven_shards(vocab as u32, k)?, args)?,
    };

    let grad = out.grad.as_ref().ok_or("no gradient came back")?;
    let m = out.metrics;
    let scalars = [
        ("loss", m.loss),
        ("pg_clipfrac", m.pg_clipfrac),
        ("pg_clipfrac_lower", m.pg_clipfrac_lower),
        ("ppo_kl", m.ppo_kl),
        ("kl", m.kl),
        ("entropy_mean", m.entropy_mean),
        ("nonfinite_rows", m.nonfinite_rows),
        ("cov_selected_frac", m.cov_selected_frac),
        ("entropy_mask_frac", m.entropy_mask_frac),
        ("rollout_is_mean", m.rollout_is_mean),
        ("rollout_is_min", m.rollout_is_min),
        ("rollout_is_max", m.rollout_is_max),
        ("rollout_is_clipfrac", m.rollout_is_clipfrac),
        ("rollout_logp_diff_max", m.rollout_logp_diff_max),
        ("invalid_input_rows", m.invalid_input_rows),
    ];
    let scalar_bytes: Vec<(&str, [u8; 4])> =
        scalars.iter().map(|&(n, v)| (n, v.to_le_bytes())).collect();
    let grad_dtype = match args.grad_dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::Bf16 => Dtype::BF16,
    };
    let mut tensors: Vec<(String, TensorView<'_>)> = vec![
        (
            "logprobs".into(),
            TensorView::new(
                Dtype::F32,
                lead.clone(),
                bytemuck::cast_slice(&out.logprobs),
            )?,
        ),
        (
            "entropy".into(),
            TensorView::new(Dtype::F32, lead.clone(), bytemuck::cast_slice(&out.entropy))?,
        ),
        (
            "grad_logits".into(),
            TensorView::new(grad_dtype, shape.clone(), &grad.bytes)?,
        ),
    ];
    for (name, b) in &scalar_bytes {
        tensors.push((name.to_string(), TensorView::new(Dtype::F32, vec![], b)?));
    }
    safetensors::tensor::serialize_to_file(tensors, None, &args.output)
        .map_err(|e| format!("cannot write {}: {e}", args.output.display()))?;
    println!(
        "loss {:.6}  entropy_mean {:.4}  pg_clipfrac {:.4}  nonfinite_rows {}  -> {}",
        m.loss,
        m.entropy_mean,
        m.pg_clipfrac,
        m.nonfinite_rows,
        args.output.display()
    );
    Ok(())
}
