//! `eval`: the loss, log-probs, entropies, gradient and metrics of a safetensors file,
//! the way a PyTorch user checks this library against their own code.

use std::path::PathBuf;

use clap::Args;
use safetensors::tensor::SafeTensors;
use wgpu_policy_loss::{Context, DType, Error, LossConfig};

use super::CliResult;
use flags::{flag, LossArgs, EXEC, IO};
use positions::Positions;

mod flags;
mod input;
mod output;
mod parts;
mod positions;
mod primitive;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Input tensors: logits (or hidden [T, H] / [B, S, H] and lm_head [V, H], the
    /// fused linear head: never both), targets, mask, advantages [, old_logprobs,
    /// ref_logprobs, rollout_logprobs].
    #[arg(long, help_heading = IO)]
    input: PathBuf,
    /// Where to write loss, logprobs, entropy, lse, the metrics and grad_logits (with
    /// hidden: grad_hidden and grad_lm_head instead).
    #[arg(long, help_heading = IO)]
    output: PathBuf,
    /// Which logits row scores which id. shifted: a causal LM's [B, S, V] logits
    /// against its input ids [B, S] as targets; every per-token tensor is [B, S], of
    /// the predicted token, position 0 unread; logprobs, entropy and lse are 0 at
    /// position 0, the gradient's last row of each sequence 0.
    #[arg(long, value_enum, default_value_t = Positions::Aligned, help_heading = IO)]
    positions: Positions,
    /// Dtype of grad_logits (or of grad_hidden and grad_lm_head).
    #[arg(long, default_value = "f32", help_heading = IO)]
    grad_dtype: DType,
    #[command(flatten)]
    loss: LossArgs,
    /// The adapter to run on (see `--help`: a backend, `lavapipe`, or part of a name).
    #[arg(long, help_heading = EXEC)]
    adapter: Option<String>,
    /// Split the rows into this many buffers, each of whole sequences ([B, S, V] logits,
    /// B ≥ K), and compute the loss over them as one batch: the outputs are those of
    /// one buffer.
    #[arg(long, default_value_t = 1, help_heading = EXEC)]
    parts: usize,
    /// Split the vocabulary into this many uneven shards (widths growing with the
    /// rank) and compute the loss through the sharded API on one device: each shard's
    /// partial statistics, gathered, then each shard's loss and gradient columns. The
    /// outputs are as without the flag.
    #[arg(long, help_heading = EXEC)]
    vocab_shards: Option<u32>,
    /// With hidden and lm_head: rows of logits held at once (≥ 1; default: what fits
    /// the device). The outputs do not depend on it beyond f32 rounding.
    #[arg(long, help_heading = EXEC)]
    head_chunk: Option<u32>,
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
        input::Input::read(&st, args.positions)?
    };
    run_input(args, &input).map_err(|e| positions::remap(input.shift, e))
}

/// `eval` of the input read (its rows lined up where shifted).
fn run_input(args: &EvalArgs, input: &input::Input) -> CliResult {
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
        return run_head(args, &config, input, &head);
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
    let mut out = match args.vocab_shards {
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
    if let Some(s) = input.shift {
        s.restore(&mut out, input.vocab);
    }
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
    let mut out = ctx.policy_loss_head(config, head, Some(args.grad_dtype))?;
    let grads = (out.grad_hidden.as_mut(), out.grad_lm_head.as_ref());
    let dims = (shape.as_slice(), *h, input.vocab);
    let (lead, path) = (&input.lead, &args.output);
    output::write_head(&mut out.loss, grads, input.shift, dims, lead, path, true)
}
