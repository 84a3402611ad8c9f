//! `eval` of the log-prob primitive (docs/MATH.md#the-eval-command, "The primitive in
//! `eval`"): an input with any `upstream_*` tensor holds only the logits, the targets,
//! the temperatures and those; the output has `logprobs`, `entropy`, `lse` and
//! `grad_logits`.

use safetensors::SafeTensors;
use wgpu_policy_loss::reference::sampler::KeptSets;
use wgpu_policy_loss::{
    Context, Error, HostGrad, HostLogProbs, HostLogProbsHead, HostLoss, LogProbConfig, Metrics,
};

use super::input::{expect_shape, f32s, source, target_ids, tensor, Columns, Source};
use super::positions::{Positions, Shift};
use super::{bad, context, flag, output, EvalArgs};
use crate::cli::CliResult;

/// The upstream tensors, in the order of `HostLogProbs`.
const UPSTREAM: [&str; 3] = ["upstream_logprobs", "upstream_entropy", "upstream_lse"];

/// The flags that apply to the primitive (clap's ids); any other given is an error.
const FLAGS: [&str; 13] = [
    "input",
    "output",
    "positions",
    "grad_dtype",
    "temperature",
    "logit_softcap",
    "top_k",
    "top_p",
    "min_p",
    "head_chunk",
    "adapter",
    "parts",
    "vocab_shards",
];

/// Whether the input asks for the primitive: any upstream tensor.
pub(super) fn wanted(st: &SafeTensors<'_>) -> bool {
    let names = st.names();
    UPSTREAM.iter().any(|u| names.iter().any(|n| n == u))
}

/// The primitive's run; `given` are the ids of the flags on the command line.
pub(super) fn run(args: &EvalArgs, given: &[String], st: &SafeTensors<'_>) -> CliResult {
    check_names(given, st)?;
    let batch = Batch::read(st, args.positions)?;
    run_batch(args, &batch).map_err(|e| super::positions::remap(batch.shift, e))
}

/// The primitive's run on the input read (its rows lined up where shifted).
fn run_batch(args: &EvalArgs, batch: &Batch) -> CliResult {
    let head = matches!(batch.source, Source::Head { .. });
    for (given, name) in [
        (args.head_chunk.is_some() && !head, "--head-chunk"),
        (args.parts != 1 && head, "--parts"),
        (args.vocab_shards.is_some() && head, "--vocab-shards"),
    ] {
        if given {
            let why = "applies to logits, or to hidden and lm_head, not to this input";
            return Err(bad(name, why).into());
        }
    }
    if args.head_chunk == Some(0) {
        return Err(bad("--head-chunk", "must be at least 1").into());
    }
    if batch.temps.is_some() && args.loss.temperature.is_some() {
        return Err(bad(
            "--temperature",
            "cannot be given with a `temperatures` tensor in the input",
        )
        .into());
    }
    let config = LogProbConfig {
        temperature: args.loss.temperature.unwrap_or(1.0),
        logit_softcap: args.loss.logit_softcap,
        top_k: args.loss.top_k,
        top_p: args.loss.top_p,
        min_p: args.loss.min_p,
    };
    let ctx = context(args.adapter.as_deref())?;
    if matches!(batch.source, Source::Head { .. }) {
        return run_head(args, batch, &config, &ctx);
    }
    let mut out = match args.vocab_shards {
        None => batch.run(&ctx, &config, args)?,
        Some(_) if args.parts != 1 => {
            let why = "cannot be combined with --parts: give one of them";
            return Err(bad("--vocab-shards", why).into());
        }
        Some(k) => batch.sharded(&ctx, &config, k, args.grad_dtype)?,
    };
    if let Some(s) = batch.shift {
        s.restore(&mut out, batch.vocab);
    }
    let mut shape = batch.lead.clone();
    shape.push(batch.vocab);
    let grad = out.grad.as_ref().ok_or("no gradient came back")?;
    output::write_rows(
        &out,
        &batch.lead,
        &[("grad_logits", shape, grad)],
        &args.output,
    )
}

/// The primitive of hidden and lm_head: its two gradients.
fn run_head(args: &EvalArgs, batch: &Batch, config: &LogProbConfig, ctx: &Context) -> CliResult {
    let Source::Head {
        hidden,
        lm_head,
        shape,
        h,
    } = &batch.source
    else {
        return Err("not a head input".into());
    };
    let b = HostLogProbsHead {
        hidden: hidden.host(),
        lm_head: lm_head.host(),
        hidden_dim: *h as u32,
        chunk_rows: args.head_chunk,
        ..batch.host_rows()
    };
    let mut out = ctx
        .logprobs_head(config, &b, Some(args.grad_dtype))
        .map_err(flag)?;
    let grads = (out.grad_hidden.as_mut(), out.grad_lm_head.as_ref());
    let dims = (shape.as_slice(), *h, batch.vocab);
    let (lead, path) = (&batch.lead, &args.output);
    output::write_head(&mut out.loss, grads, batch.shift, dims, lead, path, false)
}

/// `Err` naming the first loss flag on the command line, or the first tensor of the
/// input the primitive does not take.
fn check_names(given: &[String], st: &SafeTensors<'_>) -> CliResult {
    if let Some(id) = given.iter().find(|id| !FLAGS.contains(&id.as_str())) {
        let name = id.replace('_', "-");
        return Err(format!(
            "invalid argument `--{name}`: is a loss flag; with upstream_* tensors `eval` runs \
             the log-prob primitive, which takes none"
        )
        .into());
    }
    for name in st.names() {
        let name: &str = name;
        let known = [
            "logits",
            "hidden",
            "lm_head",
            "targets",
            "temperatures",
            "keep_offsets",
            "keep_ids",
        ]
        .contains(&name)
            || UPSTREAM.contains(&name);
        if !known {
            let why =
                "is not an input of the log-prob primitive (upstream_* tensors are in the input)";
            return Err(format!("invalid argument `{name}`: {why}").into());
        }
    }
    Ok(())
}

/// The input's tensors, read and checked against one another.
struct Batch {
    /// The file's leading shape (the outputs'); the other fields hold the rows read,
    /// lined up where `shift` is set.
    lead: Vec<usize>,
    vocab: usize,
    seqs: usize,
    source: Source,
    targets: Vec<u32>,
    temps: Option<Vec<f32>>,
    keep: Option<super::input::OwnedKept>,
    up: [Option<Vec<f32>>; 3],
    shift: Option<Shift>,
}

impl Batch {
    fn read(st: &SafeTensors<'_>, positions: Positions) -> Result<Self, Error> {
        let (_, lead, vocab, _, source) = source(st)?;
        let shift = Shift::of(positions, &lead)?;
        let seqs = if lead.len() == 2 { lead[0] } else { 1 };
        let per_row = |name: &'static str| -> Result<Option<Vec<f32>>, Error> {
            match tensor(st, name)? {
                Some(t) => {
                    expect_shape(name, &t, &lead)?;
                    Ok(Some(f32s(name, &t)?))
                }
                None => Ok(None),
            }
        };
        let up = [
            per_row(UPSTREAM[0])?,
            per_row(UPSTREAM[1])?,
            per_row(UPSTREAM[2])?,
        ];
        let y =
            tensor(st, "targets")?.ok_or_else(|| bad("targets", "missing from the input file"))?;
        expect_shape("targets", &y, &lead)?;
        // an id is read (and checked) where upstream_logprobs is not 0
        let rows: usize = lead.iter().product();
        let mut reads: Vec<f32> = match &up[0] {
            Some(a) => a
                .iter()
                .map(|&a| if a != 0.0 { 1.0 } else { 0.0 })
                .collect(),
            None => vec![0.0; rows],
        };
        if let Some(s) = shift {
            s.unread(&mut reads);
        }
        let mut batch = Batch {
            targets: target_ids(&y, &reads, vocab)?,
            temps: per_row("temperatures")?,
            keep: super::input::kept_sets(st, rows)?,
            source,
            lead,
            vocab,
            seqs,
            up,
            shift,
        };
        if let Some(s) = shift {
            batch.line_up(s)?;
        }
        Ok(batch)
    }

    /// The rows `s` shifts read, lined up (see [`super::positions`]).
    fn line_up(&mut self, s: Shift) -> Result<(), Error> {
        match &mut self.source {
            Source::Logits(x) => x.line_up(s, self.vocab),
            Source::Head { hidden, h, .. } => hidden.line_up(s, *h),
        }
        s.tokens(&mut self.targets);
        for v in self.up.iter_mut().chain([&mut self.temps]).flatten() {
            s.tokens(v);
        }
        if let Some(k) = &self.keep {
            self.keep = Some(s.kept(k, self.vocab)?);
        }
        Ok(())
    }

    /// The primitive over `--parts` parts of whole sequences, joined.
    fn run(
        &self,
        ctx: &Context,
        config: &LogProbConfig,
        args: &EvalArgs,
    ) -> Result<HostLoss, Error> {
        let k = args.parts;
        if k == 0 || k > self.seqs {
            let why = format!(
                "{k} parts of {} sequence(s): give 1 to {}",
                self.seqs, self.seqs
            );
            return Err(bad("--parts", why));
        }
        let rows = self.targets.len();
        let whole = self.host(0..rows, self.kept());
        // every row checked once, numbered over the whole batch
        whole.check(config).map_err(flag)?;
        let kept = super::parts::split_kept(self.kept(), (rows, self.vocab), self.seqs, k)?;
        let rps = rows / self.seqs;
        let mut out = HostLoss {
            metrics: Metrics::from_slice(&[0.0; Metrics::LEN]),
            logprobs: Vec::new(),
            entropy: Vec::new(),
            lse: Vec::new(),
            grad: Some(HostGrad {
                dtype: args.grad_dtype,
                bytes: Vec::new(),
            }),
        };
        for i in 0..k {
            let (r0, r1) = (i * self.seqs / k * rps, (i + 1) * self.seqs / k * rps);
            let part = kept.get(i).map(|(offsets, ids)| KeptSets { offsets, ids });
            let got = ctx
                .logprobs(config, &self.host(r0..r1, part), Some(args.grad_dtype))
                .map_err(flag)?;
            out.metrics.loss += got.metrics.loss;
            out.metrics.invalid_input_rows += got.metrics.invalid_input_rows;
            out.logprobs.extend(got.logprobs);
            out.entropy.extend(got.entropy);
            out.lse.extend(got.lse);
            if let (Some(g), Some(part)) = (out.grad.as_mut(), got.grad) {
                g.bytes.extend(part.bytes);
            }
        }
        Ok(out)
    }

    /// The primitive over `k` vocabulary shards (widths 1 : 2 : … : k): every shard's
    /// partials gathered, then each shard's outputs and the gradient of its columns,
    /// joined into the whole vocabulary's.
    fn sharded(
        &self,
        ctx: &Context,
        config: &LogProbConfig,
        k: u32,
        grad_dtype: wgpu_policy_loss::DType,
    ) -> Result<HostLoss, Error> {
        let Source::Logits(x) = &self.source else {
            return Err(bad(
                "--vocab-shards",
                "splits logits: not hidden and lm_head",
            ));
        };
        let shards = super::parts::uneven_shards(self.vocab as u32, k)?;
        let rows = self.targets.len();
        let whole = self.host(0..rows, self.kept());
        whole.check(config).map_err(flag)?;
        let cfg = wgpu_policy_loss::LossConfig {
            temperature: config.temperature,
            logit_softcap: config.logit_softcap,
            ..Default::default()
        };
        let logits = x.host();
        let pieces: Vec<Columns> = (0..shards.len())
            .map(|r| Columns::of(&logits, self.vocab, shards.range(r)))
            .collect();
        let mut gathered = Vec::new();
        for (r, piece) in pieces.iter().enumerate() {
            let ids = (piece.host(), whole.targets);
            gathered.extend(
                ctx.shard_partials_with(&cfg, &shards, r, ids, whole.kept)
                    .map_err(flag)?,
            );
        }
        let elem = grad_dtype.size() as usize;
        let mut grad = vec![0u8; rows * self.vocab * elem];
        let mut first = None;
        for (r, piece) in pieces.iter().enumerate() {
            let part = HostLogProbs {
                logits: piece.host(),
                vocab: shards.width(r),
                ..whole
            };
            let out = ctx
                .logprobs_shard(config, (&shards, r), &part, &gathered, Some(grad_dtype))
                .map_err(flag)?;
            let g = out
                .grad
                .as_ref()
                .ok_or_else(|| bad("gradient", "none came back"))?;
            let (o, w) = (
                shards.offset(r) as usize * elem,
                shards.width(r) as usize * elem,
            );
            for (row, src) in g.bytes.chunks(w).enumerate() {
                grad[row * self.vocab * elem + o..][..w].copy_from_slice(src);
            }
            first.get_or_insert(out);
        }
        let mut out = first.ok_or_else(|| bad("--vocab-shards", "no shard"))?;
        if let Some(g) = out.grad.as_mut() {
            g.bytes = grad;
        }
        Ok(out)
    }

    /// The per-row tensors of every row, for the head's batch.
    fn host_rows(&self) -> HostLogProbsHead<'_> {
        let none = wgpu_policy_loss::HostLogits::F32(&[]);
        HostLogProbsHead {
            hidden: none,
            lm_head: none,
            hidden_dim: 1,
            targets: &self.targets,
            temperatures: self.temps.as_deref(),
            kept: self.kept(),
            upstream_logprobs: self.up[0].as_deref(),
            upstream_entropy: self.up[1].as_deref(),
            upstream_lse: self.up[2].as_deref(),
            chunk_rows: None,
        }
    }

    fn kept(&self) -> Option<KeptSets<'_>> {
        self.keep
            .as_ref()
            .map(|(offsets, ids)| KeptSets { offsets, ids })
    }

    /// Rows `range` as the host API takes them (logits: empty for a head input), with
    /// their kept sets (a CSR of these rows alone).
    fn host<'s>(
        &'s self,
        range: std::ops::Range<usize>,
        kept: Option<KeptSets<'s>>,
    ) -> HostLogProbs<'s> {
        let v = self.vocab;
        let logits = match &self.source {
            Source::Logits(x) => x.host(),
            Source::Head { .. } => wgpu_policy_loss::HostLogits::F32(&[]),
        };
        let x = match logits {
            wgpu_policy_loss::HostLogits::F32(x) => {
                wgpu_policy_loss::HostLogits::F32(&x[range.start * v..range.end * v])
            }
            wgpu_policy_loss::HostLogits::F16(x) => {
                wgpu_policy_loss::HostLogits::F16(&x[range.start * v..range.end * v])
            }
            wgpu_policy_loss::HostLogits::Bf16(x) => {
                wgpu_policy_loss::HostLogits::Bf16(&x[range.start * v..range.end * v])
            }
        };
        fn part<'b>(t: &'b Option<Vec<f32>>, r: &std::ops::Range<usize>) -> Option<&'b [f32]> {
            t.as_deref().map(|t| &t[r.clone()])
        }
        HostLogProbs {
            logits: x,
            vocab: v as u32,
            targets: &self.targets[range.clone()],
            temperatures: part(&self.temps, &range),
            kept,
            upstream_logprobs: part(&self.up[0], &range),
            upstream_entropy: part(&self.up[1], &range),
            upstream_lse: part(&self.up[2], &range),
        }
    }
}
