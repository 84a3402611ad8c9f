//! The log-prob primitive (docs/MATH.md#the-log-prob-primitive): per-row `logp`, `H` and
//! `lse` of the sampler's distribution, and the gradient of any loss the caller writes
//! on them, from its upstream gradients. It runs the loss's own kernels: `prepare`
//! turns the upstream vectors into the row kernel's inputs (a row is read where any is
//! not 0), the row kernel's "loss" is the linearisation `a·logp + b·H + c·lse`, whose
//! gradient is the vector-Jacobian product, and `reduce` writes the per-row outputs.

use std::sync::Mutex;

use super::{
    Advantages, Gradient, HeadGradients, HeadInputs, LossInputs, LossOutputs, MatrixView, Metrics,
    PolicyLoss, VocabBlocks,
};
use crate::config::{LossAggMode, LossConfig, PolicyLossMode};
use crate::context::Context;
use crate::error::{Error, Result, RowInput};
use crate::view::{F32View, LogitsView, TargetsView};

/// The sampler's distribution the primitive scores under: its temperature (the call's
/// one; per-row ones are an input), its logit softcap, and the kept set it computes
/// from each row (top-k, top-p, min-p, as [`LossConfig`]'s; a given set is an input).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogProbConfig {
    /// τ: every row's logits (after the softcap) are divided by it; finite and > 0,
    /// default 1, and left at 1 when per-row temperatures are given.
    pub temperature: f32,
    /// The logit softcap `c > 0`: each logit becomes `c·tanh(x/c)` first; `None`: off
    /// (docs/MATH.md#the-samplers-distribution).
    pub logit_softcap: Option<f32>,
    /// Keep the tokens with fewer than `top_k` larger values (ties kept); 0 or −1: off.
    pub top_k: i32,
    /// Keep the most probable tokens while the mass above them is below `top_p`; 1: off.
    pub top_p: f32,
    /// Keep the tokens at least `min_p` times as probable as the most probable; 0: off.
    pub min_p: f32,
}

impl Default for LogProbConfig {
    fn default() -> Self {
        LogProbConfig {
            temperature: 1.0,
            logit_softcap: None,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

/// The caller's upstream gradients, one f32 per row each; an absent one is 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct Upstream<'a> {
    /// `a = ∂L/∂logp`: where it is not 0 the row's target must be in `[0, V)`.
    pub logprobs: Option<F32View<'a>>,
    /// `b = ∂L/∂H`.
    pub entropy: Option<F32View<'a>>,
    /// `c = ∂L/∂lse`.
    pub lse: Option<F32View<'a>>,
}

/// The primitive's device inputs: logits `[rows, V]`, one target per row (anything,
/// padding's −100 included, where `a = 0`), the per-row temperatures where the
/// sampler's differ per row, and the upstream gradients.
#[derive(Clone, Copy, Debug)]
pub struct LogProbInputs<'a> {
    /// The logits `[rows, V]`, read in place.
    pub logits: LogitsView<'a>,
    /// One id per row, read where `a ≠ 0`: there it must lie in `[0, V)` and in the
    /// row's kept set, or the row is counted as bad input.
    pub targets: TargetsView<'a>,
    /// The sampler's temperature of each row, in place of [`LogProbConfig::temperature`]
    /// (which must then be 1); checked on read rows.
    pub temperatures: Option<F32View<'a>>,
    /// The sampler's given kept set of each row (see [`LossInputs`]): `logp`, `H` and
    /// `lse` over the kept tokens, a gradient of 0 outside them.
    pub kept: Option<crate::view::KeptView<'a>>,
    /// The caller's `a`, `b`, `c`; at least one given.
    pub upstream: Upstream<'a>,
}

/// The primitive's device inputs from hidden states `[rows, H]` and the lm-head
/// weight `[V, H]` (the fused head: the logits are never held whole), as
/// [`HeadInputs`] holds them.
#[derive(Clone, Copy, Debug)]
pub struct LogProbHeadInputs<'a> {
    /// The hidden states `h`, `[rows, H]`.
    pub hidden: MatrixView<'a>,
    /// The lm-head weight `W`, `[V, H]` in hidden's dtype.
    pub lm_head: VocabBlocks<'a>,
    /// One id per row, a row of W ([`LogProbInputs::targets`]).
    pub targets: TargetsView<'a>,
    /// The sampler's temperature of each row ([`LogProbInputs::temperatures`]).
    pub temperatures: Option<F32View<'a>>,
    /// The sampler's given kept set of each row: ids of W's rows.
    pub kept: Option<crate::view::KeptView<'a>>,
    /// The caller's `a`, `b`, `c`; at least one given.
    pub upstream: Upstream<'a>,
    /// Rows of logits held at once ([`HeadInputs::chunk_rows`]).
    pub chunk_rows: Option<u32>,
}

/// The log-prob primitive, its pipelines built once per device
/// (docs/MATH.md#the-log-prob-primitive): for a loss this library does not implement,
/// each row's `logp`, `H` and `lse` under the sampler's distribution, and the
/// vector-Jacobian product of the caller's upstream gradients `a`, `b`, `c` back to the
/// logits (or to `h` and `W`). The host-slice form is [`Context::logprobs`].
#[derive(Debug)]
pub struct LogProbs {
    pub(crate) loss: PolicyLoss,
    /// Zeros in place of an absent `a` (O(rows), grown as calls need).
    zeros: Mutex<Option<wgpu::Buffer>>,
}

impl LogProbs {
    /// The primitive under `config` on `ctx`'s device; an `Err` naming a bad option
    /// (temperature, softcap, top-k, top-p, min-p).
    pub fn new(ctx: &Context, config: LogProbConfig) -> Result<Self> {
        let loss = LossConfig {
            mode: PolicyLossMode::Reinforce,
            loss_agg_mode: LossAggMode::TokenSum,
            temperature: config.temperature,
            logit_softcap: config.logit_softcap,
            top_k: config.top_k,
            top_p: config.top_p,
            min_p: config.min_p,
            ..LossConfig::default()
        };
        let mut loss = PolicyLoss::new(ctx, loss)?;
        loss.primitive = true;
        Ok(LogProbs {
            loss,
            zeros: Mutex::new(None),
        })
    }

    /// The sampler's options every call scores under.
    pub fn config(&self) -> LogProbConfig {
        let c = self.loss.config();
        LogProbConfig {
            temperature: c.temperature,
            logit_softcap: c.logit_softcap,
            top_k: c.top_k,
            top_p: c.top_p,
            min_p: c.min_p,
        }
    }

    /// Records the primitive: `outputs` get each read row's `logp` (where `a ≠ 0`), `H`
    /// and `lse` (other rows' values are unspecified), and the metrics buffer the
    /// linearised loss `Σ a·logp + b·H + c·lse` in its loss slot and the bad rows
    /// ([`LogProbs::check`]); `gradient` gets `∂L/∂x` (rows with `a = b = c = 0` get
    /// zeros). At least one upstream vector must be given.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &LogProbInputs<'_>,
        gradient: Gradient<'_>,
        outputs: &LossOutputs<'_>,
    ) -> Result<()> {
        let zeros = self.zeros(inputs.logits.rows);
        let part = self.loss_inputs(inputs, &gradient, &zeros)?;
        self.loss.record(encoder, &part, gradient, outputs)
    }

    /// The loss's inputs of a primitive call, its upstream views checked first: `a`
    /// (or `zeros`) as the advantages and the mask, `b` and `c` as the old and ref
    /// log-probs.
    fn loss_inputs<'a>(
        &self,
        inputs: &LogProbInputs<'a>,
        gradient: &Gradient<'_>,
        zeros: &'a wgpu::Buffer,
    ) -> Result<LossInputs<'a>> {
        let writes: Vec<(&'static str, &wgpu::Buffer)> = match gradient {
            Gradient::Into(g) => vec![("gradient", g.buffer)],
            _ => vec![],
        };
        let (rows, temps) = (inputs.logits.rows, inputs.temperatures);
        self.check_upstream(rows, &inputs.upstream, (inputs.targets, temps), &writes)?;
        let (mask, advantages, old, refp) = rows_of(&inputs.upstream, zeros);
        let mut part = LossInputs::new(inputs.logits, inputs.targets, mask, advantages);
        (part.old_logprobs, part.ref_logprobs) = (old, refp);
        part.temperatures = temps;
        part.kept = inputs.kept;
        Ok(part)
    }

    /// The first step of the primitive over a vocabulary split into shards: shard
    /// `rank`'s partial statistics, as [`PolicyLoss::record_shard_partials_with`] (the
    /// primitive's temperature and softcap; the rows' kept sets where given).
    pub fn record_shard_partials(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shards: &crate::VocabShards,
        rank: usize,
        (logits, targets): (&LogitsView<'_>, &TargetsView<'_>),
        kept: Option<&crate::view::KeptView<'_>>,
        partials: F32View<'_>,
    ) -> Result<()> {
        let x = (logits, targets);
        self.loss
            .record_shard_partials_with(encoder, shards, rank, x, kept, partials)
    }

    /// [`LogProbs::record`] over shard `rank`'s columns (`inputs.logits`; targets and
    /// kept ids of the whole vocabulary), with `gathered` every shard's partials in
    /// rank order: each read row's `logp`, `H` and `lse` of the whole vocabulary, and
    /// the gradient of this shard's columns, as [`PolicyLoss::record_shard_loss`].
    /// Per-row temperatures are not taken (an error naming `temperatures`).
    #[allow(clippy::too_many_arguments)]
    pub fn record_shard(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shards: &crate::VocabShards,
        rank: usize,
        inputs: &LogProbInputs<'_>,
        gradient: Gradient<'_>,
        gathered: F32View<'_>,
        outputs: &LossOutputs<'_>,
    ) -> Result<()> {
        let zeros = self.zeros(inputs.logits.rows);
        let part = self.loss_inputs(inputs, &gradient, &zeros)?;
        let part = crate::LossPart::new(part, gradient);
        self.loss
            .record_shard_loss(encoder, shards, rank, part, gathered, outputs)
    }

    /// [`LogProbs::record`] from hidden states and the lm-head weight: `grads` get
    /// `∂L/∂h` and `∂L/∂W` of the caller's loss (as [`PolicyLoss::record_head`]).
    pub fn record_head(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &LogProbHeadInputs<'_>,
        grads: &HeadGradients<'_>,
        outputs: &LossOutputs<'_>,
    ) -> Result<()> {
        let rows = inputs.hidden.rows;
        let mut writes: Vec<(&'static str, &wgpu::Buffer)> = Vec::new();
        writes.extend(grads.hidden.map(|g| ("grad_hidden", g.buffer)));
        let temps = inputs.temperatures;
        self.check_upstream(rows, &inputs.upstream, (inputs.targets, temps), &writes)?;
        let zeros = self.zeros(rows);
        let (mask, advantages, old, refp) = rows_of(&inputs.upstream, &zeros);
        let mut head = HeadInputs::new(
            inputs.hidden,
            inputs.lm_head,
            inputs.targets,
            mask,
            advantages,
        );
        (head.old_logprobs, head.ref_logprobs) = (old, refp);
        head.temperatures = temps;
        head.kept = inputs.kept;
        head.chunk_rows = inputs.chunk_rows;
        self.loss.record_head(encoder, &head, grads, outputs)
    }

    /// The upstream views against `rows`, at least one given, and no input sharing a
    /// buffer with an output, each named as the primitive names it.
    fn check_upstream(
        &self,
        rows: u32,
        up: &Upstream<'_>,
        (targets, temps): (TargetsView<'_>, Option<F32View<'_>>),
        writes: &[(&'static str, &wgpu::Buffer)],
    ) -> Result<()> {
        let given = [
            ("upstream.logprobs", up.logprobs),
            ("upstream.entropy", up.entropy),
            ("upstream.lse", up.lse),
        ];
        let mut reads = vec![("targets", targets.buffer)];
        for (arg, v) in given.iter().chain(&[("temperatures", temps)]) {
            if let Some(v) = v {
                v.validate(arg, rows)?;
                reads.push((arg, v.buffer));
            }
        }
        if given.iter().all(|(_, v)| v.is_none()) {
            return Err(Error::arg(
                "upstream",
                "give at least one of logprobs, entropy and lse",
            ));
        }
        crate::view::check_aliasing(&reads, writes)
    }

    /// A zero f32 for each of `rows` rows (`a` where the caller gives none).
    fn zeros(&self, rows: u32) -> wgpu::Buffer {
        let mut z = self.zeros.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = (rows.max(1) as u64) * 4;
        match z.as_ref() {
            Some(b) if b.size() >= bytes => b.clone(),
            _ => {
                let usage = wgpu::BufferUsages::STORAGE;
                let b = self.loss.context().buffer("primitive zeros", bytes, usage);
                *z = Some(b.clone());
                b
            }
        }
    }

    /// `Err` naming the first bad row a recorded call's metrics name: an upstream value
    /// that is NaN or ±inf on a read row (named as the primitive's tensor), a bad
    /// temperature, or a target outside `[0, vocab)` where `a ≠ 0`.
    pub fn check(metrics: &Metrics, vocab: u32) -> Result<()> {
        if let Some(b) = metrics.invalid_input {
            let (tensor, value) = match b.tensor {
                // the row kernel takes a as reinforce's advantage −a
                RowInput::Advantages => (RowInput::UpstreamLogprobs, -b.value),
                RowInput::OldLogprobs => (RowInput::UpstreamEntropy, b.value),
                RowInput::RefLogprobs => (RowInput::UpstreamLse, b.value),
                other => (other, b.value),
            };
            return Err(Error::InvalidInput {
                tensor,
                row: b.row as usize,
                value,
            });
        }
        metrics.check(vocab)
    }
}

/// The loss's per-row views of the primitive's upstream vectors: a (or `zeros`) as the
/// advantages and the mask (prepare computes which rows are read), b and c as the old
/// and ref log-probs.
fn rows_of<'a>(
    up: &Upstream<'a>,
    zeros: &'a wgpu::Buffer,
) -> (
    F32View<'a>,
    Advantages<'a>,
    Option<F32View<'a>>,
    Option<F32View<'a>>,
) {
    let a = up.logprobs.unwrap_or_else(|| F32View::new(zeros));
    (a, Advantages::PerToken(a), up.entropy, up.lse)
}
