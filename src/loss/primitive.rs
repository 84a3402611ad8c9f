//! The log-prob primitive (SPEC "The log-prob primitive"): per-row `logp`, `H` and
//! `lse` of the sampler's distribution, and the gradient of any loss the caller writes
//! on them, from its upstream gradients. It runs the loss's own kernels: `prepare`
//! turns the upstream vectors into the row kernel's inputs (a row is read where any is
//! not 0), the row kernel's "loss" is the linearisation `a·logp + b·H + c·lse`, whose
//! gradient is the vector-Jacobian product, and `reduce` writes the per-row outputs.

use super::{Advantages, Gradient, LossInputs, LossOutputs, LossPart, Metrics, PolicyLoss};
use crate::config::{LossAggMode, LossConfig, PolicyLossMode};
use crate::context::Context;
use crate::error::{Error, Result, RowInput};
use crate::view::{F32View, LogitsView, TargetsView};

/// The sampler's distribution the primitive scores under: its temperature (the call's
/// one; per-row ones are an input) and its logit softcap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogProbConfig {
    pub temperature: f32,
    pub logit_softcap: Option<f32>,
}

impl Default for LogProbConfig {
    fn default() -> Self {
        LogProbConfig {
            temperature: 1.0,
            logit_softcap: None,
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
    pub logits: LogitsView<'a>,
    pub targets: TargetsView<'a>,
    pub temperatures: Option<F32View<'a>>,
    pub upstream: Upstream<'a>,
}

/// The log-prob primitive, its pipelines built once per device.
#[derive(Debug)]
pub struct LogProbs {
    loss: PolicyLoss,
}

impl LogProbs {
    pub fn new(ctx: &Context, config: LogProbConfig) -> Result<Self> {
        let loss = LossConfig {
            mode: PolicyLossMode::Reinforce,
            loss_agg_mode: LossAggMode::TokenSum,
            temperature: config.temperature,
            logit_softcap: config.logit_softcap,
            ..LossConfig::default()
        };
        let mut loss = PolicyLoss::new(ctx, loss)?;
        loss.primitive = true;
        Ok(LogProbs { loss })
    }

    pub fn config(&self) -> LogProbConfig {
        let c = self.loss.config();
        LogProbConfig {
            temperature: c.temperature,
            logit_softcap: c.logit_softcap,
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
        let (part, has_a) = self.part(inputs, gradient)?;
        let mut plan = self.loss.plan(&[part], Some(outputs), None)?;
        for p in &mut plan.parts {
            p.rows.inputs.primitive = Some(has_a);
        }
        self.loss.encode(encoder, &plan, outputs, None, None)
    }

    /// The primitive's call as a part of the loss's kernels: a as the advantages (or,
    /// without it, any upstream view in its place, never read), b and c as the old and
    /// ref log-probs; a's view also stands in for the mask, which prepare computes.
    fn part<'a>(
        &self,
        inputs: &LogProbInputs<'a>,
        gradient: Gradient<'a>,
    ) -> Result<(LossPart<'a>, bool)> {
        let rows = inputs.logits.rows;
        let up = &inputs.upstream;
        let given = [
            ("upstream.logprobs", up.logprobs),
            ("upstream.entropy", up.entropy),
            ("upstream.lse", up.lse),
        ];
        let mut first = None;
        for (arg, v) in given {
            if let Some(v) = v {
                v.validate(arg, rows)?;
                first = first.or(Some(v));
            }
        }
        let Some(stand_in) = up.logprobs.or(first) else {
            return Err(Error::arg(
                "upstream",
                "give at least one of logprobs, entropy and lse",
            ));
        };
        check_aliasing(inputs, &gradient)?;
        let mut part = LossInputs::new(
            inputs.logits,
            inputs.targets,
            stand_in,
            Advantages::PerToken(stand_in),
        );
        part.old_logprobs = up.entropy;
        part.ref_logprobs = up.lse;
        part.temperatures = inputs.temperatures;
        Ok((LossPart::new(part, gradient), up.logprobs.is_some()))
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

/// No input shares a buffer with an output, each named as the primitive names it.
fn check_aliasing(inputs: &LogProbInputs<'_>, gradient: &Gradient<'_>) -> Result<()> {
    let up = &inputs.upstream;
    let mut reads = vec![("targets", inputs.targets.buffer)];
    for (arg, v) in [
        ("upstream.logprobs", up.logprobs),
        ("upstream.entropy", up.entropy),
        ("upstream.lse", up.lse),
        ("temperatures", inputs.temperatures),
    ] {
        reads.extend(v.map(|v| (arg, v.buffer)));
    }
    let writes: Vec<(&'static str, &wgpu::Buffer)> = match gradient {
        Gradient::Into(g) => vec![("gradient", g.buffer)],
        _ => vec![],
    };
    crate::view::check_aliasing(&reads, &writes)
}
