//! Row statistics of host logits, computed on the device.

use super::{check_targets, HostLogits};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::row_stats::RowStatsBuffers;
use crate::view::{LogitsView, TargetsView};

/// Per-row results of [`Context::row_stats`] read back to the host, one value per row
/// each (docs/MATH.md#row-statistics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowStatsHost {
    /// `lse = log Σ_v exp(x_v/τ)`.
    pub lse: Vec<f32>,
    /// The target's log-prob `z_y − lse`.
    pub logp: Vec<f32>,
    /// The entropy `H = lse − Σ_v p_v·z_v` of the tempered softmax.
    pub entropy: Vec<f32>,
}

impl Context {
    /// Per-row log-sum-exp, target log-prob and entropy of host logits `[rows, vocab]`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn row_stats(
        &self,
        logits: HostLogits<'_>,
        vocab: u32,
        targets: &[u32],
        temperature: f32,
    ) -> Result<RowStatsHost> {
        pollster::block_on(self.row_stats_async(logits, vocab, targets, temperature))
    }

    /// [`Context::row_stats`] without blocking (the browser's form).
    pub async fn row_stats_async(
        &self,
        logits: HostLogits<'_>,
        vocab: u32,
        targets: &[u32],
        temperature: f32,
    ) -> Result<RowStatsHost> {
        if vocab == 0 {
            return Err(Error::arg("vocab", "must be at least 1"));
        }
        if !logits.len().is_multiple_of(vocab as usize) {
            return Err(Error::arg(
                "logits",
                format!("length {} is not a multiple of vocab {vocab}", logits.len()),
            ));
        }
        let rows = logits.len() / vocab as usize;
        let rows_u32 = u32::try_from(rows).map_err(|_| Error::arg("logits", "too many rows"))?;
        check_targets(targets, rows, vocab)?;
        crate::kernels::row_stats::check_temperature(temperature)?;
        if rows == 0 {
            return Ok(RowStatsHost::default());
        }
        let padded = |n: u64| n.div_ceil(4).max(1) * 4;
        let what = format!("[{rows}, {vocab}] {}", logits.dtype());
        self.fits_buffer("logits", &what, padded(logits.bytes().len() as u64))?;
        super::check_rows(self, rows_u32)?;
        let x = self.upload("logits", logits.bytes());
        let y = self.upload("targets", bytemuck::cast_slice(targets));
        let out = RowStatsBuffers::new(self, rows_u32);
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        self.record_row_stats(
            &mut encoder,
            &LogitsView::new(&x, logits.dtype(), rows_u32, vocab),
            &TargetsView::new(&y),
            temperature,
            &out.outputs(),
        )?;
        let mut got = self
            .read_f32s_async(encoder, &[&out.lse, &out.logp, &out.entropy], rows)
            .await?;
        let entropy = got.pop().unwrap_or_default();
        let logp = got.pop().unwrap_or_default();
        let lse = got.pop().unwrap_or_default();
        Ok(RowStatsHost { lse, logp, entropy })
    }
}
