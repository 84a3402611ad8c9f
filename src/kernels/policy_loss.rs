//! Host side of `shaders/policy_loss.wgsl`: the fused forward + backward row kernel.

use super::{
    dispatch, entry, grid, storage_window, to_u32, uniform, whole, GradOut, Kernel, LayoutParams,
    PipelineKey,
};
use crate::config::{KlEstimator, LossConfig, PolicyLossMode};
use crate::context::Context;
use crate::error::Result;
use crate::view::{DType, LogitsView, RowLayout, TargetsView};

pub(crate) const PHASE_STATS: u32 = 1;
pub(crate) const PHASE_LOSS: u32 = 2;
const HAS_DUAL: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    x: LayoutParams,
    y: LayoutParams,
    g: LayoutParams,
    rows: u32,
    vocab: u32,
    inv_tau: f32,
    phase: u32,
    mode: u32,
    kl_type: u32,
    flags: u32,
    clip_low: f32,
    clip_high: f32,
    clip_c: f32,
    kl_coef: f32,
    entropy_coeff: f32,
}

/// Where the gradient goes, resolved to a buffer and a layout.
pub(crate) enum GradDest<'a> {
    None,
    Separate {
        buffer: &'a wgpu::Buffer,
        dtype: DType,
        layout: RowLayout,
    },
    InPlace,
}

/// The per-call state of the row kernel shared by its launches.
pub(crate) struct RowCall<'a> {
    pub config: &'a LossConfig,
    pub logits: &'a LogitsView<'a>,
    pub targets: &'a TargetsView<'a>,
    /// Rows per sequence, clamped to the row count.
    pub rows_per_seq: u32,
    pub row_flags: u32,
    pub grad: &'a GradDest<'a>,
    pub rowin: &'a wgpu::Buffer,
    pub seqinfo: &'a wgpu::Buffer,
    pub rowout: &'a wgpu::Buffer,
}

pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    call: &RowCall<'_>,
    phase: u32,
) -> Result<()> {
    let limits = ctx.device().limits();
    let logits = call.logits;
    let rows = logits.rows;
    let cfg = call.config;
    let (x_first, x_end) = logits.layout.span(rows as u64, logits.vocab as u64);
    let (x_bind, x_offset) = storage_window(
        "logits",
        logits.buffer,
        x_first,
        x_end,
        logits.dtype.size(),
        &limits,
    )?;
    let (y_first, y_end) = call.targets.layout.span(rows as u64, 1);
    let (y_bind, y_offset) =
        storage_window("targets", call.targets.buffer, y_first, y_end, 4, &limits)?;

    // the gradient only exists in the launch that computes the loss
    let writes_grad = phase & PHASE_LOSS != 0;
    let (grad_out, g_layout, g_bind) = match (call.grad, writes_grad) {
        (
            GradDest::Separate {
                buffer,
                dtype,
                layout,
            },
            true,
        ) => {
            let (first, end) = layout.span(rows as u64, logits.vocab as u64);
            let (bind, offset) =
                storage_window("gradient", buffer, first, end, dtype.size(), &limits)?;
            let mut l = *layout;
            l.offset = offset as u64;
            (GradOut::Separate(*dtype), l, Some(bind))
        }
        (GradDest::InPlace, true) => {
            let mut l = logits.layout;
            l.offset = x_offset as u64;
            (GradOut::InPlace, l, None)
        }
        _ => (GradOut::None, logits.layout, None),
    };
    let mut flags = call.row_flags;
    if cfg.clip_ratio_c.is_some() {
        flags |= HAS_DUAL;
    }
    // the loss groups rows into sequences by the logits' layout
    let mut x = logits.layout;
    x.rows_per_seq = call.rows_per_seq;
    let params = Params {
        x: LayoutParams::new("logits", &x, x_offset, rows)?,
        y: LayoutParams::new("targets", &call.targets.layout, y_offset, rows)?,
        g: LayoutParams::new(
            "gradient",
            &g_layout,
            to_u32("gradient", "offset", g_layout.offset)?,
            rows,
        )?,
        rows,
        vocab: logits.vocab,
        inv_tau: crate::kernels::row_stats::check_temperature(cfg.temperature)?,
        phase,
        mode: match cfg.mode {
            PolicyLossMode::Reinforce => 0,
            PolicyLossMode::PpoClip => 1,
            PolicyLossMode::Gspo => 2,
        },
        kl_type: match cfg.kl_loss_type {
            KlEstimator::K1 => 0,
            KlEstimator::K2 => 1,
            KlEstimator::K3 => 2,
        },
        flags,
        clip_low: cfg.clip_ratio_low,
        clip_high: cfg.clip_ratio_high,
        clip_c: cfg.clip_ratio_c.unwrap_or(0.0),
        kl_coef: cfg.kl_coef,
        entropy_coeff: cfg.entropy_coeff,
    };
    let pipeline = ctx.pipeline(PipelineKey {
        kernel: Kernel::PolicyLoss,
        logits: logits.dtype,
        grad: grad_out,
        paths: ctx.paths(),
    })?;
    let uniform = uniform(ctx, "policy_loss params", &params);
    let mut entries = vec![
        entry(0, x_bind),
        whole(1, &uniform),
        entry(2, y_bind),
        whole(3, call.rowin),
        whole(4, call.seqinfo),
        whole(5, call.rowout),
    ];
    if let Some(g) = g_bind {
        entries.push(entry(6, g));
    }
    dispatch(
        ctx,
        encoder,
        "policy_loss",
        &pipeline,
        &entries,
        grid(rows, &limits)?,
    )
}
