//! Host side of `shaders/policy_loss.wgsl`: the fused forward + backward row kernel,
//! dispatched in chunks of rows when the logits (or gradient) exceed one binding or
//! the rows exceed the dispatch grid.

use super::{
    check_loops, dispatch_chunks, entry, f32_window, grid, plan_chunks, row_lane_steps,
    storage_window_in, whole, ChunkUniforms, GradOut, Kernel, LayoutParams, PipelineKey, RowSpan,
    RowTensor, ScratchBufs,
};
use crate::config::{KlEstimator, LossConfig, PolicyLossMode};
use crate::context::Context;
use crate::error::Result;
pub(crate) use crate::shader::abi::policy_loss::*;
use crate::shader::abi::NO_TEMPS;
use crate::view::{DType, F32View, LogitsView, RowLayout, TargetsView};

/// Where the gradient goes, resolved to a buffer and a layout.
pub(crate) enum GradDest<'a> {
    None,
    Separate {
        buffer: &'a wgpu::Buffer,
        dtype: DType,
        layout: RowLayout,
    },
    InPlace,
    /// In the logits' buffer, at its own rows: bound with the logits, as in place.
    Beside {
        layout: RowLayout,
    },
}

/// The per-call state of the row kernel shared by its launches.
pub(crate) struct RowCall<'a> {
    pub config: &'a LossConfig,
    pub logits: &'a LogitsView<'a>,
    pub targets: &'a TargetsView<'a>,
    /// Rows per sequence, clamped to the row count.
    pub rows_per_seq: u32,
    pub row_flags: u32,
    /// Where this part's rows and sequences start in the scratch buffers.
    pub part_row: u32,
    pub part_seq: u32,
    pub grad: &'a GradDest<'a>,
    /// rowin, seqinfo, rowout and select.wgsl's per-row results (a spare buffer where
    /// the flags say none).
    pub scratch: ScratchBufs<'a>,
    /// Where `logits` lie in a split vocabulary: their first column, and the whole
    /// vocabulary's size (0 and `logits.vocab` when the rows are whole).
    pub col_offset: u32,
    pub vocab_total: u32,
    /// The fused head's chunk: only rows `[first, end)` of the part, whose logits are
    /// dense f32 rows of `logits.layout.row_stride` elements from the start of
    /// `logits.buffer` (row `first` first). `None`: every row, where the view says.
    pub chunk: Option<(u32, u32)>,
    /// The sampler's per-row temperatures of the part's rows.
    pub temps: Option<F32View<'a>>,
    /// The call's kept scratch where kept sets are given (kept_partials.wgsl wrote the
    /// rows' headers and pairs; sampler/kept.wgsl reads them in place of the
    /// temperatures).
    pub kept: Option<&'a wgpu::Buffer>,
}

impl<'a> RowCall<'a> {
    /// Whether the rows go through the sampler's map (sampler/on.wgsl).
    fn sampler(&self) -> super::SamplerMap {
        let map = super::SamplerMap::of(self.config.logit_softcap.is_some(), self.temps.is_some());
        match self.kept {
            Some(_) => map.kept(),
            None => map,
        }
    }

    /// sampler/on.wgsl's binding 8 (the temperatures' window, else rowin, never read)
    /// and the window's index of row 0 (NO_TEMPS: none).
    fn temps_window(&self, limits: &wgpu::Limits) -> Result<(wgpu::BufferBinding<'a>, u32)> {
        if let Some(kept) = self.kept {
            // the headers hold each row's temperature: `temps` only says there are any
            let temps = if self.temps.is_some() { 0 } else { NO_TEMPS };
            return Ok((kept.as_entire_buffer_binding(), temps));
        }
        match &self.temps {
            Some(v) => f32_window("temperatures", v, self.logits.rows as u64, limits),
            None => Ok((self.scratch.rowin.as_entire_buffer_binding(), NO_TEMPS)),
        }
    }

    /// The tensors bound per chunk: logits, targets and (in the loss launch) a separate
    /// gradient buffer.
    fn tensors(&self, writes_grad: bool, limits: &wgpu::Limits) -> Vec<RowTensor<'a>> {
        let rows = self.logits.rows;
        let x = self.logits.span();
        let size = self.logits.buffer.size();
        let mut quad = x.quad_aligned(rows, size, limits);
        if let (GradDest::Beside { layout }, true) = (self.grad, writes_grad) {
            let g = grad_span(layout, self.logits.vocab, self.logits.dtype);
            quad &= g.quad_aligned(rows, size, limits);
        }
        let mut t = vec![
            RowTensor {
                span: x,
                buffer: self.logits.buffer,
                quad,
            },
            RowTensor {
                span: self.targets.span(),
                buffer: self.targets.buffer,
                quad: false,
            },
        ];
        if let (
            GradDest::Separate {
                buffer,
                dtype,
                layout,
            },
            true,
        ) = (self.grad, writes_grad)
        {
            let span = grad_span(layout, self.logits.vocab, *dtype);
            t.push(RowTensor {
                span,
                buffer,
                quad: span.quad_aligned(rows, buffer.size(), limits),
            });
        }
        t
    }
}

/// The gradient's rows, for planning chunks.
pub(crate) fn grad_span(layout: &RowLayout, vocab: u32, dtype: DType) -> RowSpan {
    RowSpan {
        arg: "gradient",
        layout: *layout,
        width: vocab as u64,
        elem: dtype.size(),
    }
}

/// The mode's code in policy_loss.wgsl (and seq_terms.wgsl).
pub(crate) fn mode_code(mode: PolicyLossMode) -> u32 {
    match mode {
        PolicyLossMode::Reinforce => MODE_REINFORCE,
        PolicyLossMode::PpoClip => MODE_PPO,
        PolicyLossMode::Gspo => MODE_GSPO,
        PolicyLossMode::Cispo => MODE_CISPO,
        PolicyLossMode::Sapo => MODE_SAPO,
        PolicyLossMode::Gpg => MODE_GPG,
        PolicyLossMode::ClipCov => MODE_CLIP_COV,
        PolicyLossMode::KlCov => MODE_KL_COV,
        PolicyLossMode::GeoMean => MODE_GEO_MEAN,
        PolicyLossMode::DppoTv => MODE_DPPO_TV,
        PolicyLossMode::DppoKl => MODE_DPPO_KL,
        PolicyLossMode::Dro => MODE_DRO,
        PolicyLossMode::Vespo => MODE_VESPO,
    }
}

/// The code of the estimator whose value `est` takes (KL_STRAIGHT marks a `+`).
pub(crate) fn kl_code(est: KlEstimator) -> u32 {
    match est.value_estimator() {
        KlEstimator::K1 => KL_K1,
        KlEstimator::K2 => KL_K2,
        KlEstimator::K3 => KL_K3,
        _ => KL_ABS,
    }
}

/// The clipped objective's constants; DPPO's truncation C is dual-clip's field, 3.0
/// when absent (verl's `actor.clip_ratio_c`).
pub(crate) fn clip_of(cfg: &LossConfig) -> Clip {
    let dppo = matches!(cfg.mode, PolicyLossMode::DppoTv | PolicyLossMode::DppoKl);
    Clip {
        low: cfg.clip_ratio_low,
        high: cfg.clip_ratio_high,
        c: cfg.clip_ratio_c.unwrap_or(if dppo { 3.0 } else { 0.0 }),
        delta: cfg.delta.unwrap_or(0.0),
    }
}

/// HAS_DUAL and HAS_DELTA: which cap the clipped objective takes.
pub(crate) fn clip_flags(cfg: &LossConfig) -> u32 {
    (cfg.clip_ratio_c.is_some() as u32 * HAS_DUAL) | (cfg.delta.is_some() as u32 * HAS_DELTA)
}

pub(crate) fn vespo_of(cfg: &LossConfig) -> Vespo {
    Vespo {
        k_pos: cfg.vespo_k_pos,
        lambda_pos: cfg.vespo_lambda_pos,
        k_neg: cfg.vespo_k_neg,
        lambda_neg: cfg.vespo_lambda_neg,
    }
}

/// The flags the configuration alone sets (beside the inputs' and select's).
pub(crate) fn config_flags(cfg: &LossConfig) -> u32 {
    use super::seq_terms::{has_addend, policy_via_seq};
    let on = [
        (
            SEQ_RATIO,
            cfg.sequence_ratio() && cfg.mode != PolicyLossMode::Gspo,
        ),
        (POLICY_VIA_SEQ, policy_via_seq(cfg)),
        (SEQ_ADDEND, has_addend(cfg)),
        (KL_STRAIGHT, cfg.kl_loss_type.straight_through()),
        (BIAS_KL, cfg.bias_corrected_kl()),
        (OFF_POLICY, cfg.off_policy_mask_threshold.is_some()),
        // GMPO's own policy weight 1/(n_b·B) stands in seqinfo.z (seq_terms.wgsl)
        (RENORMALIZE, cfg.mode == PolicyLossMode::GeoMean),
    ];
    on.iter()
        .filter(|f| f.1)
        .fold(clip_flags(cfg), |acc, f| acc | f.0)
}

/// Beside the logits, one read-write window holds both, the same for every chunk (so
/// chunks split the grid only): the binding, the element of its start, and the
/// gradient's layout.
fn beside_window<'a>(
    call: &RowCall<'a>,
    x: &RowTensor<'a>,
    writes_grad: bool,
    limits: &wgpu::Limits,
) -> Result<Option<(wgpu::BufferBinding<'a>, u64, RowLayout)>> {
    let (GradDest::Beside { layout }, true) = (call.grad, writes_grad) else {
        return Ok(None);
    };
    let logits = call.logits;
    let (rows, width) = (logits.rows as u64, logits.vocab as u64);
    let (xl, xh) = logits.layout.span(rows, width);
    let (gl, gh) = layout.span(rows, width);
    let quantum = if x.quad { x.span.quad_bytes() } else { 4 };
    let (lo, hi) = (xl.min(gl), xh.max(gh));
    let elem = x.span.elem;
    let (bind, inner) =
        storage_window_in("gradient", logits.buffer, lo, hi, elem, quantum, limits)?;
    Ok(Some((bind, lo - inner as u64, *layout)))
}

/// The fused head's chunk buffer `[first, end)`, bound whole, read-write (the gradient
/// goes over it, in place): the binding, the virtual element of its start (row `first`
/// lies at 0, so the shader's wrapping row starts land in the window), and the
/// layout. Its rows are dense f32 of a multiple of eight elements: quads whenever the
/// device's binding alignment keeps 32-byte groups.
fn head_window<'a>(
    call: &RowCall<'a>,
    rows: (u32, u32),
    x: &mut RowTensor<'a>,
    limits: &wgpu::Limits,
) -> Result<(wgpu::BufferBinding<'a>, u64, RowLayout)> {
    let c = head_chunk(call.logits, rows, limits)?;
    x.quad = c.quad;
    Ok((c.x, c.base, seq_layout(call)))
}

/// The head's chunk `(first, end)` of `logits` (the chunk buffer's dense f32 rows),
/// bound whole, as [`head_window`] binds it for the row kernels.
pub(crate) fn head_chunk<'a>(
    logits: &LogitsView<'a>,
    (first, end): (u32, u32),
    limits: &wgpu::Limits,
) -> Result<super::ChunkRows<'a>> {
    let stride = logits.layout.row_stride;
    let quad = stride.is_multiple_of(8)
        && (limits.min_storage_buffer_offset_alignment as u64).is_multiple_of(32);
    let quantum = if quad { 16 } else { 4 };
    let len = (end - first).max(1) as u64 * stride;
    let (x, _) = storage_window_in("logits", logits.buffer, 0, len, 4, quantum, limits)?;
    Ok(super::ChunkRows {
        rows: (first, end),
        x,
        base: first as u64 * stride,
        quad,
    })
}

/// `Err` where a lane's loops of the row kernel pass the adapter's loop limit: sweep 1
/// over the row's groups of eight, sweep 2 over its groups or over words of two 16-bit
/// values (whichever the sweep is, the larger).
fn check_row_loops(ctx: &Context, vocab: u32, phase: u32, grad_out: GradOut) -> Result<()> {
    let stats_items = match phase & PHASE_STATS != 0 {
        false => 0,
        true => super::group_items(vocab),
    };
    let grad_items = match grad_out {
        GradOut::None => 0,
        _ => vocab as u64 / 2 + 1,
    };
    check_loops(
        ctx,
        "logits",
        "the row kernel (a row's two sweeps)",
        row_lane_steps(ctx, stats_items) + row_lane_steps(ctx, grad_items),
    )
}

/// One chunk's bindings: logits, ids, a separate gradient, and its grid.
type ChunkWindows<'a> = (
    wgpu::BufferBinding<'a>,
    wgpu::BufferBinding<'a>,
    Option<wgpu::BufferBinding<'a>>,
    (u32, u32),
);

pub(crate) fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    call: &RowCall<'_>,
    phase: u32,
) -> Result<()> {
    let limits = ctx.device().limits();
    let logits = call.logits;
    let writes_grad = phase & PHASE_LOSS != 0;
    let grad_out = grad_out(call.grad, writes_grad);
    let mut tensors = call.tensors(writes_grad, &limits);
    let beside = match call.chunk {
        Some(rows) => Some(head_window(call, rows, &mut tensors[0], &limits)?),
        None => beside_window(call, &tensors[0], writes_grad, &limits)?,
    };
    let spans: Vec<RowSpan> = tensors.iter().map(|t| t.span).collect();
    let chunks = match call.chunk {
        Some(rows) => vec![rows],
        None => plan_chunks(logits.rows, &spans, &limits)?,
    };
    let mut params = Vec::with_capacity(chunks.len());
    let (temps_bind, temps) = call.temps_window(&limits)?;
    let mut windows: Vec<ChunkWindows<'_>> = Vec::with_capacity(chunks.len());
    for &(first, end) in chunks.iter().filter(|c| c.1 > c.0) {
        let (x_bind, x_base) = match &beside {
            Some((bind, base, _)) => (bind.clone(), *base),
            None => tensors[0].window(first, end, &limits)?,
        };
        let (y_bind, y_base) = tensors[1].window(first, end, &limits)?;
        let (g_bind, g_layout, g_base) = match (tensors.get(2), &beside) {
            (Some(g), _) => {
                let (bind, base) = g.window(first, end, &limits)?;
                (Some(bind), g.span.layout, base)
            }
            (None, Some((_, base, layout))) => (None, *layout, *base),
            // in place, the gradient shares the logits' window; otherwise it is unused
            (None, None) => (None, seq_layout(call), x_base),
        };
        let bases = [x_base, y_base, g_base];
        params.push(chunk_params(
            call,
            (phase, temps),
            (first, end),
            bases,
            &g_layout,
        )?);
        windows.push((x_bind, y_bind, g_bind, grid(end - first, &limits)));
    }
    check_row_loops(ctx, logits.vocab, phase, grad_out)?;
    let pipeline = ctx.pipeline(PipelineKey {
        kernel: Kernel::PolicyLoss,
        logits: logits.dtype,
        grad: grad_out,
        paths: ctx.paths(),
        quad: tensors[0].quad,
        grad_quad: tensors.get(2).is_some_and(|g| g.quad),
        lane_blocks: ctx.lane_blocks(),
        sampler: call.sampler(),
    })?;
    let uniforms = ChunkUniforms::new(ctx, "policy_loss params", &params);
    let dispatches: Vec<_> = windows
        .into_iter()
        .enumerate()
        .map(|(i, (x, y, g, groups))| {
            let mut entries = vec![entry(0, x), uniforms.entry(1, i), entry(2, y)];
            entries.extend(scratch_entries(&call.scratch));
            entries.extend(g.map(|g| entry(6, g)));
            if call.sampler().binds_temps() {
                entries.push(entry(8, temps_bind.clone()));
            }
            (entries, groups)
        })
        .collect();
    dispatch_chunks(ctx, encoder, "policy_loss", &pipeline, &dispatches)
}

/// rowin, seqinfo, rowout and rowaux at their bindings.
fn scratch_entries<'b>(s: &ScratchBufs<'b>) -> [wgpu::BindGroupEntry<'b>; 4] {
    [
        whole(3, s.rowin),
        whole(4, s.seqinfo),
        whole(5, s.rowout),
        whole(7, s.rowaux),
    ]
}

/// The module's gradient output: none where the phase writes none.
fn grad_out(grad: &GradDest<'_>, writes_grad: bool) -> GradOut {
    match (grad, writes_grad) {
        (GradDest::Separate { dtype, .. }, true) => GradOut::Separate(*dtype),
        (GradDest::InPlace | GradDest::Beside { .. }, true) => GradOut::InPlace,
        _ => GradOut::None,
    }
}

/// The logits' layout with the loss's sequences: the loss groups rows into sequences by
/// the logits' layout.
fn seq_layout(call: &RowCall<'_>) -> RowLayout {
    let mut x_layout = call.logits.layout;
    x_layout.rows_per_seq = call.rows_per_seq;
    x_layout
}

/// The parameter block of chunk `(first, end)`: the logits', ids' and gradient's
/// element bases in their windows, and the gradient's layout.
fn chunk_params(
    call: &RowCall<'_>,
    (phase, temps): (u32, u32),
    (first, end): (u32, u32),
    [x_base, y_base, g_base]: [u64; 3],
    g_layout: &RowLayout,
) -> Result<Params> {
    let (cfg, rows) = (call.config, call.logits.rows);
    let flags = call.row_flags | config_flags(cfg);
    Ok(Params {
        x: LayoutParams::new("logits", &seq_layout(call), x_base, rows)?,
        y: LayoutParams::new("targets", &call.targets.layout, y_base, rows)?,
        g: LayoutParams::new("gradient", g_layout, g_base, rows)?,
        row_base: first,
        row_end: end,
        vocab: call.logits.vocab,
        inv_tau: crate::kernels::row_stats::check_temperature(cfg.temperature)?,
        phase,
        mode: mode_code(cfg.mode),
        kl_type: kl_code(cfg.kl_loss_type),
        flags,
        clip: clip_of(cfg),
        kl_coef: cfg.kl_coef,
        entropy_coeff: cfg.entropy_coeff,
        part_row: call.part_row,
        part_seq: call.part_seq,
        tau_pos: cfg.tau_pos,
        tau_neg: cfg.tau_neg,
        kappa: cfg.ppo_kl_coef,
        col_offset: call.col_offset,
        vocab_total: call.vocab_total,
        dro_beta: cfg.dro_beta.unwrap_or(0.0),
        softcap: cfg.logit_softcap.unwrap_or(0.0),
        temps,
        vespo: vespo_of(cfg),
    })
}
