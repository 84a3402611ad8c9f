//! One shape's buffers, ready to record any of the measured workloads.

use super::buffers::{unfused_buffers, Part, UnfusedChunk};
use super::BenchShape;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::baseline::{self, BaselineBuffers};
use crate::kernels::row_stats::RowStatsBuffers;
use crate::loss::{Advantages, GradView, Gradient, LossBuffers, LossInputs, LossPart, PolicyLoss};
use crate::reference::compare::{self, Format, Tolerance};
use crate::view::{DType, F32View, LogitsView, RowLayout, TargetsView};
use crate::{LossConfig, VocabShards};

/// The fused gradient against the baseline's.
pub type GradAgreement = std::result::Result<compare::Comparison, compare::Mismatch>;

/// The fused gradient (stored in `dtype`, widened) against the unfused baseline's f32
/// one, by the library's rule for ∂L/∂logits (`reference::compare`): neither is exact,
/// each is within its rule of the exact gradient, so they are within the sum of the
/// two of each other; a NaN or ±Inf in either fails.
pub fn agree(fused: &[f32], dtype: DType, unfused: &[f32]) -> GradAgreement {
    let want: Vec<f64> = unfused.iter().map(|&v| v as f64).collect();
    let rule = Tolerance::logits_grad(dtype.into()).plus(Tolerance::logits_grad(Format::F32));
    if let Some(i) = want.iter().position(|v| !v.is_finite()) {
        // the baseline's own NaN is no licence for the fused one
        return Err(compare::Mismatch::NotFinite(compare::Element {
            index: i,
            got: fused.get(i).map_or(f64::NAN, |&v| v as f64),
            want: want[i],
            bound: 0.0,
        }));
    }
    compare::within(fused, &want, rule)
}

/// The buffers of one shape, ready to record any of the measured workloads. Logits
/// larger than the device's largest buffer are held in parts, each of them one
/// sequence, and the loss runs over them as one batch ([`PolicyLoss::record_parts`]).
pub struct Workload {
    ctx: Context,
    pub shape: BenchShape,
    parts: Vec<Part>,
    out: LossBuffers,
    stats: RowStatsBuffers,
    loss: PolicyLoss,
    /// The baseline's `[T, V]` f32 intermediates (in chunks of rows that fit one
    /// buffer each), or why the device cannot hold them.
    unfused: std::result::Result<Vec<UnfusedChunk>, String>,
}

impl Workload {
    /// Allocates and fills the buffers (logits with a cheap pattern, on the device).
    pub fn new(ctx: &Context, shape: BenchShape) -> Result<Self> {
        let parts = Part::make_all(ctx, shape)?;
        let unfused = unfused_buffers(ctx, shape, &parts);
        Ok(Workload {
            ctx: ctx.clone(),
            shape,
            out: LossBuffers::new(ctx, shape.rows),
            stats: RowStatsBuffers::new(ctx, shape.rows),
            // the seed's REINFORCE with token-mean: the computation the baseline does
            loss: PolicyLoss::new(
                ctx,
                LossConfig {
                    mode: crate::PolicyLossMode::Reinforce,
                    ..LossConfig::default()
                },
            )?,
            parts,
            unfused,
        })
    }

    /// How many buffers the logits are held in.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Part `p`'s logits: one sequence of its rows.
    fn logits_view<'a>(&self, p: &'a Part) -> LogitsView<'a> {
        LogitsView::new(&p.logits, self.shape.dtype, p.rows, self.shape.vocab)
    }

    /// The loss's inputs, part by part, with `gradient(part)`.
    fn parts_inputs<'a>(
        &'a self,
        gradient: impl Fn(&'a Part) -> Gradient<'a>,
    ) -> Vec<(LossInputs<'a>, Gradient<'a>)> {
        self.parts
            .iter()
            .map(|p| {
                let inputs = LossInputs::new(
                    self.logits_view(p),
                    TargetsView::new(&p.targets),
                    F32View::new(&p.mask),
                    Advantages::PerToken(F32View::new(&p.advantages)),
                );
                (inputs, gradient(p))
            })
            .collect()
    }

    /// `loss`'s forward + backward on this shape, with old (and, for a rollout
    /// correction, the sampler's) log-probs: the gradient in the logits' dtype into its
    /// own buffer.
    pub fn record_loss(&self, loss: &PolicyLoss, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.record_loss_with(loss, (false, false), encoder)
    }

    /// [`Workload::record_loss`], with each row's sampling temperature where `temps`,
    /// and a given kept set of 50 ids a row where `kept`. Where `loss` computes a kept
    /// set, each row's target is its largest logit (kept by any rule).
    pub fn record_loss_with(
        &self,
        loss: &PolicyLoss,
        (temps, kept): (bool, bool),
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        let (dtype, vocab) = (self.shape.dtype, self.shape.vocab);
        let rollout = loss.config().rollout_correction.is_some();
        let parts: Vec<LossPart<'_>> = self
            .parts
            .iter()
            .zip(self.parts_inputs(|p| Gradient::Into(GradView::new(&p.grad, dtype, vocab))))
            .map(|(p, (inputs, gradient))| {
                let mut inputs = inputs.with_old_logprobs(F32View::new(&p.old));
                if loss.config().computes_kept_set() {
                    inputs.targets = TargetsView::new(&p.top_targets);
                }
                inputs.temperatures = temps.then(|| F32View::new(&p.temps));
                let len = p.rows * super::buffers::KEPT_IDS.min(vocab);
                let csr = crate::KeptView::new(&p.keep_offsets, &p.keep_ids, len);
                inputs.kept = kept.then_some(csr);
                let part = LossPart::new(inputs, gradient);
                match rollout {
                    true => part.with_rollout_logprobs(F32View::new(&p.rollout)),
                    false => part,
                }
            })
            .collect();
        loss.record_parts(encoder, &parts, &self.out.outputs())
    }

    /// This library's forward + backward: loss, metrics, and the gradient in the logits'
    /// dtype into its own buffer.
    pub fn record_fused(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let (dtype, vocab) = (self.shape.dtype, self.shape.vocab);
        let parts = self.parts_inputs(|p| Gradient::Into(GradView::new(&p.grad, dtype, vocab)));
        self.loss.record_parts(encoder, &parts, &self.out.outputs())
    }

    /// Ranks `ranks` of a vocabulary split into `shards`, on this one device: each
    /// rank's partials of its columns (a strided view of the logits) into its slot of
    /// `gathered`, then each rank's loss and the gradient of its columns, as
    /// [`record_fused`](Self::record_fused) with the vocabulary split. All ranks in one
    /// call stand for the whole exchange with the all-gather free; one rank is one
    /// device's share when each rank has its own.
    pub fn record_sharded(
        &self,
        shards: &VocabShards,
        ranks: std::ops::Range<usize>,
        gathered: &wgpu::Buffer,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        let [p] = &self.parts[..] else {
            return Err(Error::arg(
                "shape",
                format!(
                    "{}: the sharded bench needs the logits in one buffer",
                    self.shape
                ),
            ));
        };
        let (dtype, vocab) = (self.shape.dtype, self.shape.vocab as u64);
        let columns = |k: usize| RowLayout {
            offset: shards.offset(k) as u64,
            row_stride: vocab,
            rows_per_seq: u32::MAX,
            seq_stride: 0,
        };
        let inputs = |k: usize| {
            let logits = LogitsView {
                buffer: &p.logits,
                dtype,
                rows: p.rows,
                vocab: shards.width(k),
                layout: columns(k),
            };
            LossInputs::new(
                logits,
                TargetsView::new(&p.targets),
                F32View::new(&p.mask),
                Advantages::PerToken(F32View::new(&p.advantages)),
            )
        };
        for k in ranks.clone() {
            let i = inputs(k);
            let at = F32View::at(gathered, k as u64 * shards.partial_bytes(p.rows));
            self.loss
                .record_shard_partials(encoder, shards, k, &i.logits, &i.targets, at)?;
        }
        for k in ranks {
            let gradient = Gradient::Into(GradView {
                buffer: &p.grad,
                dtype,
                layout: columns(k),
            });
            self.loss.record_shard_loss(
                encoder,
                shards,
                k,
                (inputs(k), gradient),
                F32View::new(gathered),
                &self.out.outputs(),
            )?;
        }
        Ok(())
    }

    /// The loss forward only: loss, metrics, log-probs and entropies, no gradient.
    pub fn record_forward(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let parts = self.parts_inputs(|_| Gradient::None);
        self.loss.record_parts(encoder, &parts, &self.out.outputs())
    }

    /// The row kernel alone: one read of the logits for log-sum-exp, log-prob, entropy.
    pub fn record_row_stats(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let s = &self.stats;
        for p in &self.parts {
            let at = |b| F32View::at(b, p.first as u64 * 4);
            let out = crate::RowStatsOutputs {
                lse: at(&s.lse),
                logp: at(&s.logp),
                entropy: at(&s.entropy),
            };
            self.ctx.record_row_stats(
                encoder,
                &self.logits_view(p),
                &TargetsView::new(&p.targets),
                1.0,
                &out,
            )?;
        }
        Ok(())
    }

    /// The loss's O(rows) pre-pass alone (per-row inputs, the sequences' weights).
    pub fn record_prepare(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.loss
            .record_prepare(encoder, &self.parts_inputs(|_| Gradient::None))
    }

    /// Whether the device can hold the baseline's `[T, V]` f32 intermediates.
    pub fn has_unfused(&self) -> bool {
        self.unfused.is_ok()
    }

    /// Why the baseline cannot run on this shape here, if it cannot.
    pub fn unfused_unavailable(&self) -> Option<&str> {
        self.unfused.as_ref().err().map(String::as_str)
    }

    fn unfused_chunks(&self) -> Result<&[UnfusedChunk]> {
        self.unfused
            .as_deref()
            .map_err(|why| Error::arg("shape", format!("no unfused baseline: {why}")))
    }

    /// The unfused baseline: log_softmax, gather, masked mean, scatter, log_softmax
    /// backward, with `[T, V]` f32 intermediates (several buffers of them where one
    /// would exceed the device's largest buffer; each chunk of rows takes its own
    /// token-mean, the same work).
    pub fn record_unfused(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        for c in self.unfused_chunks()? {
            let p = &self.parts[c.part];
            let offset = c.first as u64 * self.shape.vocab as u64 * self.shape.dtype.size();
            let mut logits = self.logits_view(p).with_byte_offset(offset)?;
            logits.rows = c.rows;
            baseline::record(
                &self.ctx,
                encoder,
                &logits,
                &BaselineBuffers {
                    targets: &p.targets,
                    targets_first: c.first as u64,
                    full_a: &c.full_a,
                    full_b: &c.full_b,
                    rowvec: &c.rowvec,
                    loss: &c.loss,
                },
            )?;
        }
        Ok(())
    }

    /// Runs the fused loss once and reads the loss back.
    pub fn fused_loss(&self) -> Result<f32> {
        let mut enc = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        self.record_fused(&mut enc)?;
        let got = self.ctx.read_back(enc, &[(&self.out.metrics, 4)])?;
        Ok(f32::from_le_bytes(got[0][..4].try_into().expect("4 bytes")))
    }

    /// Runs the fused and the unfused computation once and returns |loss difference|
    /// and the gradients' comparison ([`agree`]): both must compute the same thing for
    /// the speed-up to mean anything. For shapes held in one buffer and one chunk of
    /// baseline.
    pub fn compare(&self) -> Result<(f64, GradAgreement)> {
        let chunks = self.unfused_chunks()?;
        let ([p], [c]) = (&self.parts[..], chunks) else {
            return Err(Error::arg(
                "shape",
                "compare needs the shape in one buffer and one chunk of baseline",
            ));
        };
        let mut enc = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        self.record_fused(&mut enc)?;
        self.record_unfused(&mut enc)?;
        let n = self.shape.rows as u64 * self.shape.vocab as u64;
        let got = self.ctx.read_back(
            enc,
            &[
                (&self.out.metrics, 4),
                (&c.loss, 4),
                (&p.grad, n * self.shape.dtype.size()),
                (&c.full_a, n * 4),
            ],
        )?;
        let f = |b: &[u8]| f32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as f64;
        let fused = crate::HostGrad {
            dtype: self.shape.dtype,
            bytes: got[2].clone(),
        }
        .to_f32();
        let unfused: Vec<f32> = bytemuck::pod_collect_to_vec(&got[3]);
        let grad = agree(&fused, self.shape.dtype, &unfused);
        Ok(((f(&got[0]) - f(&got[1])).abs(), grad))
    }

    /// The roofline by the copy engine: the logits' bytes copied buffer to buffer.
    pub fn record_copy_buffer(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        for p in &self.parts {
            let bytes = p.logits.size() / 16 * 16;
            self.ctx
                .scoped(|| encoder.copy_buffer_to_buffer(&p.logits, 0, &p.grad, 0, bytes))?;
        }
        Ok(())
    }

    /// The roofline through the shader cores: the same bytes copied by a trivial kernel.
    pub fn record_copy_kernel(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        for p in &self.parts {
            let bytes = p.logits.size() / 16 * 16;
            baseline::record_copy(&self.ctx, encoder, &p.logits, &p.grad, bytes)?;
        }
        Ok(())
    }
}
