//! Host side of `shaders/row_stats.wgsl`: per row, the log-sum-exp, the target's
//! log-prob and the entropy, all of the logits divided by the temperature.

use super::{f32_window, Kernel};
use crate::context::Context;
use crate::error::{Error, Result};
pub(crate) use crate::shader::abi::row_stats::*;
use crate::view::{F32View, LogitsView, TargetsView};

/// Where [`Context::record_row_stats`] writes its per-row results: `rows` f32 values
/// each, row `r` at element `r` of each view (docs/MATH.md#row-statistics).
#[derive(Clone, Copy, Debug)]
pub struct RowStatsOutputs<'a> {
    /// `lse = log Σ_v exp(x_v/τ)` of each row.
    pub lse: F32View<'a>,
    /// The target's log-prob `z_y − lse` (NaN for an id outside `[0, vocab)`).
    pub logp: F32View<'a>,
    /// The entropy `H` of each row's tempered softmax.
    pub entropy: F32View<'a>,
}

/// Device buffers for the per-row results, owned by the caller.
#[derive(Debug)]
pub struct RowStatsBuffers {
    /// `rows` f32 log-sum-exps.
    pub lse: wgpu::Buffer,
    /// `rows` f32 target log-probs.
    pub logp: wgpu::Buffer,
    /// `rows` f32 entropies.
    pub entropy: wgpu::Buffer,
    /// The number of rows the buffers hold (each buffer holds at least one value).
    pub rows: u32,
}

impl RowStatsBuffers {
    /// Three f32 buffers of `rows` values (usage STORAGE | COPY_SRC | COPY_DST).
    pub fn new(ctx: &Context, rows: u32) -> Self {
        let make = |label| {
            ctx.buffer(
                label,
                (rows.max(1) as u64) * 4,
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            )
        };
        RowStatsBuffers {
            lse: make("lse"),
            logp: make("logp"),
            entropy: make("entropy"),
            rows,
        }
    }

    /// Views of the three buffers from their start, for [`Context::record_row_stats`].
    pub fn outputs(&self) -> RowStatsOutputs<'_> {
        RowStatsOutputs {
            lse: F32View::new(&self.lse),
            logp: F32View::new(&self.logp),
            entropy: F32View::new(&self.entropy),
        }
    }
}

/// Checks a temperature: finite and > 0.
pub(crate) fn check_temperature(temperature: f32) -> Result<f32> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::arg(
            "temperature",
            format!("must be finite and > 0, got {temperature}"),
        ));
    }
    Ok((1.0f64 / temperature as f64) as f32)
}

impl Context {
    /// Records the row-statistics kernel into `encoder`: for each row of `logits`, the
    /// log-sum-exp, the log-prob of its target and the entropy, of `logits / temperature`.
    /// Reads nothing back. Token ids outside `[0, vocab)` give a NaN log-prob (the host
    /// convenience [`Context::row_stats`] reports them as an error instead).
    pub fn record_row_stats(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsView<'_>,
        targets: &TargetsView<'_>,
        temperature: f32,
        out: &RowStatsOutputs<'_>,
    ) -> Result<()> {
        let inv_tau = check_temperature(temperature)?;
        logits.validate()?;
        let rows = logits.rows;
        targets.validate(rows)?;
        out.lse.validate("out.lse", rows)?;
        out.logp.validate("out.logp", rows)?;
        out.entropy.validate("out.entropy", rows)?;
        crate::view::check_aliasing(
            &[("logits", logits.buffer), ("targets", targets.buffer)],
            &[
                ("out.lse", out.lse.buffer),
                ("out.logp", out.logp.buffer),
                ("out.entropy", out.entropy.buffer),
            ],
        )?;
        if rows == 0 {
            return Ok(());
        }
        let limits = self.device().limits();
        let n = rows as u64;
        let (lse_bind, lse_offset) = f32_window("out.lse", &out.lse, n, &limits)?;
        let (logp_bind, logp_offset) = f32_window("out.logp", &out.logp, n, &limits)?;
        let (ent_bind, entropy_offset) = f32_window("out.entropy", &out.entropy, n, &limits)?;
        let cols = super::column_blocks(
            &super::Caps::of(self),
            logits.vocab,
            &[super::PartSpans {
                rows,
                per_column: vec![logits.span()],
                per_row: vec![targets.span()],
            }],
        )?;
        let outs = [
            (lse_bind, lse_offset),
            (logp_bind, logp_offset),
            (ent_bind, entropy_offset),
        ];
        if cols.len() > 1 {
            return self.record_row_stats_blocks(encoder, logits, targets, inv_tau, &cols, outs);
        }
        let [(lse_bind, _), (logp_bind, _), (ent_bind, _)] = outs;
        let chunk = |x, y, row_base, row_end| Params {
            x,
            y,
            row_base,
            row_end,
            vocab: logits.vocab,
            inv_tau,
            lse_offset,
            logp_offset,
            entropy_offset,
            ..bytemuck::Zeroable::zeroed()
        };
        let outputs = [lse_bind, logp_bind, ent_bind];
        super::record_row_sweep(
            self,
            encoder,
            Kernel::RowStats,
            (logits, targets),
            chunk,
            &outputs,
            (
                super::SamplerMap::Off,
                targets.buffer.as_entire_buffer_binding(),
            ),
        )
    }

    /// [`Context::record_row_stats`] of rows longer than one binding (or one lane's
    /// loops): each column block's partials into a buffer of `blocks × rows × 16`
    /// bytes made for the call, merged by combine.wgsl into the three outputs.
    fn record_row_stats_blocks(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsView<'_>,
        targets: &TargetsView<'_>,
        inv_tau: f32,
        cols: &[super::ColumnBlock],
        outs: [(wgpu::BufferBinding<'_>, u32); 3],
    ) -> Result<()> {
        use super::combine::{CombineOut, Gathered};
        use super::row_partials::PartialsOut;
        let rows = logits.rows;
        let items = cols.len() as u64 * rows as u64;
        let bytes = items * crate::shards::PARTIAL_BYTES;
        self.fits_buffer("logits", "the column blocks' partial statistics", bytes)?;
        let partials = self.buffer("row_stats partials", bytes, wgpu::BufferUsages::STORAGE);
        let limits = self.device().limits();
        let (binding, _) = super::storage_window(
            "logits",
            &partials,
            0,
            items,
            crate::shards::PARTIAL_BYTES,
            &limits,
        )?;
        let mut starts = Vec::with_capacity(cols.len() + 1);
        for (j, &(col, width)) in cols.iter().enumerate() {
            let mut block = *logits;
            block.layout.offset += col as u64;
            block.vocab = width;
            let out = PartialsOut {
                binding: binding.clone(),
                offset: j as u32 * rows,
            };
            let sampler = super::row_partials::Sampler::off(inv_tau);
            super::row_partials::record(self, encoder, &block, targets, &sampler, col, &out)?;
            starts.push(col);
        }
        starts.push(logits.vocab);
        let input = Gathered {
            binding,
            offset: 0,
            stride: rows,
        };
        super::combine::record(
            self,
            encoder,
            rows,
            targets,
            &starts,
            &input,
            &CombineOut::RowStats(outs),
        )
    }
}
