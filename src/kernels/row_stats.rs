//! Host side of `shaders/row_stats.wgsl`: per row, the log-sum-exp, the target's
//! log-prob and the entropy, all of the logits divided by the temperature.

use super::{
    dispatch, entry, grid, storage_window, uniform, whole, GradOut, Kernel, LayoutParams,
    PipelineKey,
};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::view::{F32View, LogitsView, TargetsView};

/// Where the per-row results go: `rows` f32 values each.
#[derive(Clone, Copy, Debug)]
pub struct RowStatsOutputs<'a> {
    pub lse: F32View<'a>,
    pub logp: F32View<'a>,
    pub entropy: F32View<'a>,
}

/// Device buffers for the per-row results, owned by the caller.
#[derive(Debug)]
pub struct RowStatsBuffers {
    pub lse: wgpu::Buffer,
    pub logp: wgpu::Buffer,
    pub entropy: wgpu::Buffer,
    pub rows: u32,
}

impl RowStatsBuffers {
    /// Three f32 buffers of `rows` values (usage STORAGE | COPY_SRC | COPY_DST).
    pub fn new(ctx: &Context, rows: u32) -> Self {
        let make = |label| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (rows.max(1) as u64) * 4,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        RowStatsBuffers {
            lse: make("lse"),
            logp: make("logp"),
            entropy: make("entropy"),
            rows,
        }
    }

    pub fn outputs(&self) -> RowStatsOutputs<'_> {
        RowStatsOutputs {
            lse: F32View::new(&self.lse),
            logp: F32View::new(&self.logp),
            entropy: F32View::new(&self.entropy),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    x: LayoutParams,
    y: LayoutParams,
    rows: u32,
    vocab: u32,
    inv_tau: f32,
    lse_offset: u32,
    logp_offset: u32,
    entropy_offset: u32,
    _pad: [u32; 2],
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
        let lse_first = out.lse.validate("out.lse", rows)?;
        let logp_first = out.logp.validate("out.logp", rows)?;
        let ent_first = out.entropy.validate("out.entropy", rows)?;
        if rows == 0 {
            return Ok(());
        }
        let limits = self.device().limits();

        let (x_first, x_end) = logits.layout.span(rows as u64, logits.vocab as u64);
        let elem = logits.dtype.size();
        let (x_bind, x_offset) =
            storage_window("logits", logits.buffer, x_first, x_end, elem, &limits)?;
        let (y_first, y_end) = targets.layout.span(rows as u64, 1);
        let (y_bind, y_offset) =
            storage_window("targets", targets.buffer, y_first, y_end, 4, &limits)?;
        let n = rows as u64;
        let (lse_bind, lse_offset) = storage_window(
            "out.lse",
            out.lse.buffer,
            lse_first,
            lse_first + n,
            4,
            &limits,
        )?;
        let (logp_bind, logp_offset) = storage_window(
            "out.logp",
            out.logp.buffer,
            logp_first,
            logp_first + n,
            4,
            &limits,
        )?;
        let (ent_bind, entropy_offset) = storage_window(
            "out.entropy",
            out.entropy.buffer,
            ent_first,
            ent_first + n,
            4,
            &limits,
        )?;
        let (gx, gy) = grid(rows, &limits)?;

        let params = Params {
            x: LayoutParams::new("logits", &logits.layout, x_offset, rows)?,
            y: LayoutParams::new("targets", &targets.layout, y_offset, rows)?,
            rows,
            vocab: logits.vocab,
            inv_tau,
            lse_offset,
            logp_offset,
            entropy_offset,
            _pad: [0; 2],
        };

        let pipeline = self.pipeline(PipelineKey {
            kernel: Kernel::RowStats,
            logits: logits.dtype,
            grad: GradOut::None,
            paths: self.paths(),
        })?;
        let uniform = uniform(self, "row_stats params", &params);
        dispatch(
            self,
            encoder,
            "row_stats",
            &pipeline,
            &[
                entry(0, x_bind),
                whole(1, &uniform),
                entry(2, y_bind),
                entry(3, lse_bind),
                entry(4, logp_bind),
                entry(5, ent_bind),
            ],
            (gx, gy),
        )
    }
}
