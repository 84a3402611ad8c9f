//! One module per shader: its bind layout, uniforms and dispatch. The WGSL lives in
//! `shaders/`; a kernel's module is a concatenation of snippets — how logits are
//! stored (`logits/`), where a gradient goes (`grad/`, `sweep/`), the shared prelude
//! and the workgroup reduction (`workgroup/`) — then the kernel itself. Workgroup size
//! and the 16-bit formats are `override` constants set when the pipeline is built.

pub(crate) mod advantages;
pub(crate) mod baseline;
pub(crate) mod combine;
pub(crate) mod gspo_ratio;
pub(crate) mod policy_loss;
pub(crate) mod prepare;
pub(crate) mod reduce;
pub(crate) mod row_partials;
pub(crate) mod row_stats;
pub(crate) mod select;

use crate::context::{Paths, ROW_WORKGROUP};
use crate::error::{Error, Result};
use crate::view::DType;

macro_rules! shader {
    ($path:literal) => {
        include_str!(concat!("../../shaders/", $path))
    };
}

/// The kernels of the crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Per row: log-sum-exp, target log-prob, entropy.
    RowStats,
    /// Per row: one shard's (or column block's) partial statistics.
    RowPartials,
    /// The partials of every shard merged into row statistics.
    Combine,
    /// Per row inputs gathered, per sequence aggregation weights.
    Prepare,
    /// The fused forward + backward row kernel.
    PolicyLoss,
    /// GSPO's sequence ratio.
    GspoRatio,
    /// Loss and metrics.
    Reduce,
    /// The batch-wide token choices: rollout weights, entropy mask, covariance selection.
    Select,
    /// Advantages from rewards.
    Advantages,
    /// The unfused baseline of the benchmarks, one op per kernel.
    Baseline(BaselineOp),
    /// The roofline's copy kernel.
    Copy,
}

/// The ops of the unfused baseline (`shaders/baseline.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BaselineOp {
    LogSoftmax,
    Gather,
    MaskedMean,
    ScatterGrad,
    LogSoftmaxBwd,
}

/// Where the policy-loss kernel writes the gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GradOut {
    None,
    /// A separate buffer of this dtype.
    Separate(DType),
    /// Over the logits.
    InPlace,
}

impl Kernel {
    pub const ALL: [Kernel; 15] = [
        Kernel::RowStats,
        Kernel::RowPartials,
        Kernel::Combine,
        Kernel::Prepare,
        Kernel::PolicyLoss,
        Kernel::GspoRatio,
        Kernel::Reduce,
        Kernel::Select,
        Kernel::Advantages,
        Kernel::Baseline(BaselineOp::LogSoftmax),
        Kernel::Baseline(BaselineOp::Gather),
        Kernel::Baseline(BaselineOp::MaskedMean),
        Kernel::Baseline(BaselineOp::ScatterGrad),
        Kernel::Baseline(BaselineOp::LogSoftmaxBwd),
        Kernel::Copy,
    ];

    fn source(self) -> &'static str {
        match self {
            Kernel::RowStats => shader!("row_stats.wgsl"),
            Kernel::RowPartials => shader!("row_partials.wgsl"),
            Kernel::Combine => shader!("combine.wgsl"),
            Kernel::Prepare => shader!("prepare.wgsl"),
            Kernel::PolicyLoss => shader!("policy_loss.wgsl"),
            Kernel::GspoRatio => shader!("gspo_ratio.wgsl"),
            Kernel::Reduce => shader!("reduce.wgsl"),
            Kernel::Select => shader!("select.wgsl"),
            Kernel::Advantages => shader!("advantages.wgsl"),
            Kernel::Baseline(_) => shader!("baseline.wgsl"),
            Kernel::Copy => shader!("copy.wgsl"),
        }
    }

    fn entry_point(self) -> &'static str {
        match self {
            Kernel::RowStats => "row_stats",
            Kernel::RowPartials => "row_partials",
            Kernel::Combine => "combine",
            Kernel::Prepare => "prepare",
            Kernel::PolicyLoss => "policy_loss",
            Kernel::GspoRatio => "gspo_ratio",
            Kernel::Reduce => "reduce",
            Kernel::Select => "select_tokens",
            Kernel::Advantages => "advantages",
            Kernel::Baseline(BaselineOp::LogSoftmax) => "log_softmax",
            Kernel::Baseline(BaselineOp::Gather) => "gather",
            Kernel::Baseline(BaselineOp::MaskedMean) => "masked_mean",
            Kernel::Baseline(BaselineOp::ScatterGrad) => "scatter_grad",
            Kernel::Baseline(BaselineOp::LogSoftmaxBwd) => "log_softmax_bwd",
            Kernel::Copy => "copy",
        }
    }

    /// Row kernels read logits; the others work on O(rows) data.
    fn reads_logits(self) -> bool {
        matches!(
            self,
            Kernel::RowStats | Kernel::RowPartials | Kernel::PolicyLoss | Kernel::Baseline(_)
        )
    }
}

/// Everything that selects a distinct pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub kernel: Kernel,
    pub logits: DType,
    pub grad: GradOut,
    pub paths: Paths,
    /// Logits rows start on 16-byte boundaries: read four elements at a time.
    pub quad: bool,
    /// A separate f32 gradient whose rows do too: write four at a time.
    pub grad_quad: bool,
    /// Each lane sweeps one contiguous block of a row (CPU adapters), not a stride.
    pub lane_blocks: bool,
}

impl PipelineKey {
    /// A kernel that does not touch logits: one pipeline whatever the dtype.
    pub(crate) fn small(kernel: Kernel, paths: Paths) -> Self {
        PipelineKey {
            kernel,
            logits: DType::F32,
            grad: GradOut::None,
            paths: Paths {
                shader_f16: false,
                subgroups: paths.subgroups,
            },
            quad: false,
            grad_quad: false,
            lane_blocks: false,
        }
    }

    fn name(&self) -> String {
        let grad = match self.grad {
            GradOut::None => String::new(),
            GradOut::Separate(d) => format!("/grad-{d}"),
            GradOut::InPlace => "/in-place".to_string(),
        };
        if self.kernel.reads_logits() {
            format!(
                "{:?}/{}{grad}/{}",
                self.kernel,
                self.logits,
                self.paths.describe()
            )
        } else {
            format!("{:?}", self.kernel)
        }
    }

    fn grad_dtype(&self) -> Option<DType> {
        match self.grad {
            GradOut::None => None,
            GradOut::Separate(d) => Some(d),
            GradOut::InPlace => Some(self.logits),
        }
    }

    /// The full WGSL. `enable f16;` must open the module, so it comes first.
    pub fn source(&self) -> String {
        // Native f16 serves read-only f16 logits. 16-bit gradients are always packed
        // by codec.wgsl (naga cannot bitcast a u32 to f16, and f16 conversions may
        // flush subnormals), which keeps every path's gradient bits identical.
        let in_place = self.grad == GradOut::InPlace;
        let native_f16 = self.logits == DType::F16 && self.paths.shader_f16 && !in_place;
        let quad = self.quad;
        let mut parts: Vec<&str> = Vec::new();
        if self.kernel.reads_logits() {
            if native_f16 {
                parts.push(shader!("enable_f16.wgsl"));
            }
            parts.push(shader!("codec.wgsl"));
            parts.push(match (self.logits, in_place, quad) {
                (DType::F32, false, false) => shader!("logits/f32.wgsl"),
                (DType::F32, false, true) => shader!("logits/f32_quad.wgsl"),
                (DType::F32, true, false) => shader!("logits/f32_inplace.wgsl"),
                (DType::F32, true, true) => shader!("logits/f32_inplace_quad.wgsl"),
                (_, false, false) if native_f16 => shader!("logits/f16.wgsl"),
                (_, false, true) if native_f16 => shader!("logits/f16_quad.wgsl"),
                (_, false, false) => shader!("logits/packed.wgsl"),
                (_, false, true) => shader!("logits/packed_quad.wgsl"),
                (_, true, false) => shader!("logits/packed_inplace.wgsl"),
                (_, true, true) => shader!("logits/packed_inplace_quad.wgsl"),
            });
            if let GradOut::Separate(d) = self.grad {
                parts.push(match (d, self.grad_quad && quad) {
                    (DType::F32, false) => shader!("grad/f32.wgsl"),
                    (DType::F32, true) => shader!("grad/f32_quad.wgsl"),
                    (_, false) => shader!("grad/packed.wgsl"),
                    (_, true) => shader!("grad/packed_quad.wgsl"),
                });
            }
            parts.push(if quad {
                shader!("stats/quad.wgsl")
            } else {
                shader!("stats/scalar.wgsl")
            });
            if self.kernel == Kernel::PolicyLoss {
                let quad_store = quad && (in_place || self.grad_quad);
                parts.push(match self.grad_dtype() {
                    None => shader!("sweep/none.wgsl"),
                    Some(_) if quad_store => shader!("sweep/quad.wgsl"),
                    Some(DType::F32) => shader!("sweep/elem.wgsl"),
                    Some(_) => shader!("sweep/packed.wgsl"),
                });
            }
        }
        parts.push(shader!("prelude.wgsl"));
        if matches!(
            self.kernel,
            Kernel::Advantages
                | Kernel::Baseline(_)
                | Kernel::Prepare
                | Kernel::GspoRatio
                | Kernel::Select
        ) {
            parts.push(shader!("workgroup/sum.wgsl"));
        }
        if matches!(self.kernel, Kernel::Prepare | Kernel::Select) {
            parts.push(shader!("aggregate.wgsl"));
        }
        if self.kernel.reads_logits() {
            parts.push(if self.paths.subgroups {
                shader!("workgroup/subgroup.wgsl")
            } else {
                shader!("workgroup/shared.wgsl")
            });
        }
        parts.push(self.kernel.source());
        parts.join("\n")
    }

    /// The entry point of the module this key builds.
    pub fn entry_point(&self) -> &'static str {
        self.kernel.entry_point()
    }

    /// Values of the override constants the module declares.
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        let mut c = vec![
            ("WG_SIZE", ROW_WORKGROUP as f64),
            ("LANE_BLOCKS", if self.lane_blocks { 1.0 } else { 0.0 }),
        ];
        if self.kernel.reads_logits() {
            let bf16 = |d: Option<DType>| if d == Some(DType::Bf16) { 1.0 } else { 0.0 };
            c.push(("LOGITS_BF16", bf16(Some(self.logits))));
            c.push(("GRAD_BF16", bf16(self.grad_dtype())));
        }
        c
    }
}

/// Every distinct shader the crate can build, with the paths it needs: what the
/// portability test feeds to naga's back ends.
pub fn shader_variants() -> Vec<(String, PipelineKey)> {
    let all_paths = [
        Paths::FALLBACK,
        Paths {
            shader_f16: true,
            subgroups: false,
        },
        Paths {
            shader_f16: false,
            subgroups: true,
        },
        Paths {
            shader_f16: true,
            subgroups: true,
        },
    ];
    let mut out: Vec<(String, PipelineKey)> = Vec::new();
    let mut push = |key: PipelineKey| {
        let name = key.name();
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, key));
        }
    };
    for paths in all_paths {
        for kernel in Kernel::ALL {
            if !kernel.reads_logits() {
                push(PipelineKey::small(kernel, paths));
                continue;
            }
            for logits in DType::ALL {
                let grads: Vec<GradOut> = if kernel == Kernel::PolicyLoss {
                    [GradOut::None, GradOut::InPlace]
                        .into_iter()
                        .chain(DType::ALL.map(GradOut::Separate))
                        .collect()
                } else {
                    vec![GradOut::None]
                };
                for grad in grads {
                    for (quad, grad_quad, lane_blocks) in [
                        (false, false, false),
                        (true, false, false),
                        (true, true, false),
                        (false, false, true),
                        (true, true, true),
                    ] {
                        push(PipelineKey {
                            kernel,
                            logits,
                            grad,
                            paths,
                            quad,
                            grad_quad,
                            lane_blocks,
                        });
                    }
                }
            }
        }
    }
    out
}

pub(crate) fn build_pipeline(device: &wgpu::Device, key: PipelineKey) -> wgpu::ComputePipeline {
    let label = key.name();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&label),
        source: wgpu::ShaderSource::Wgsl(key.source().into()),
    });
    let constants = key.constants();
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&label),
        layout: None,
        module: &module,
        entry_point: Some(key.kernel.entry_point()),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            // every workgroup variable is written before it is read
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    })
}

/// A storage binding covering elements `[first, end)` (of `elem` bytes) of `buffer`,
/// starting at the largest offset the device's alignment allows; returns the binding and
/// the index of element `first` inside it.
pub(crate) fn storage_window<'a>(
    arg: &'static str,
    buffer: &'a wgpu::Buffer,
    first: u64,
    end: u64,
    elem: u64,
    limits: &wgpu::Limits,
) -> Result<(wgpu::BufferBinding<'a>, u32)> {
    storage_window_in(arg, buffer, first, end, elem, 4, limits)
}

/// [`storage_window`] whose end is rounded up to a multiple of `quantum` bytes (what
/// one element of the shader's array holds: 4 bytes, or 16 for four f32 and 8 for four
/// 16-bit values on the four-at-a-time path).
pub(crate) fn storage_window_in<'a>(
    arg: &'static str,
    buffer: &'a wgpu::Buffer,
    first: u64,
    end: u64,
    elem: u64,
    quantum: u64,
    limits: &wgpu::Limits,
) -> Result<(wgpu::BufferBinding<'a>, u32)> {
    let align = limits.min_storage_buffer_offset_alignment as u64;
    let start = first * elem;
    let bind_start = start - start % align;
    // bindings cover whole words (16-bit data ending mid-word needs the padding)
    let bind_end = (end * elem)
        .div_ceil(quantum)
        .saturating_mul(quantum)
        .max(bind_start + quantum);
    if bind_end > buffer.size() {
        return Err(Error::arg(
            arg,
            format!(
                "the view ends at byte {} but a binding must reach byte {bind_end} (whole \
                 4-byte words) and the buffer holds {} bytes; pad the buffer to a multiple of 4",
                end * elem,
                buffer.size()
            ),
        ));
    }
    let size = bind_end - bind_start;
    if size > limits.max_storage_buffer_binding_size {
        return Err(Error::arg(
            arg,
            format!(
                "the view spans {size} bytes, more than this device binds at once ({} bytes)",
                limits.max_storage_buffer_binding_size
            ),
        ));
    }
    if size / elem > u32::MAX as u64 {
        return Err(Error::arg(
            arg,
            format!("the view spans {size} bytes, more elements than 32-bit indices reach"),
        ));
    }
    let inner = (start - bind_start) / elem;
    Ok((
        wgpu::BufferBinding {
            buffer,
            offset: bind_start,
            size: std::num::NonZeroU64::new(size),
        },
        inner as u32,
    ))
}

/// [`storage_window`] over `len` f32 values of a view.
pub(crate) fn f32_window<'a>(
    arg: &'static str,
    view: &crate::view::F32View<'a>,
    len: u64,
    limits: &wgpu::Limits,
) -> Result<(wgpu::BufferBinding<'a>, u32)> {
    let first = view.offset / 4;
    storage_window(arg, view.buffer, first, first + len, 4, limits)
}

/// A whole small buffer (scratch, uniforms) as a binding resource.
pub(crate) fn whole(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

pub(crate) fn entry(binding: u32, buffer: wgpu::BufferBinding<'_>) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(buffer),
    }
}

/// Records one compute pass: `pipeline` with one bind group, over `groups` workgroups.
pub(crate) fn dispatch(
    ctx: &crate::Context,
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    entries: &[wgpu::BindGroupEntry<'_>],
    groups: (u32, u32),
) -> Result<()> {
    dispatch_chunks(ctx, encoder, label, pipeline, &[(entries.to_vec(), groups)])
}

/// `mode` as aggregate.wgsl numbers it (prepare's weights, select's renormalised ones).
pub(crate) fn agg_code(mode: crate::config::LossAggMode) -> u32 {
    use crate::config::LossAggMode::*;
    match mode {
        TokenMean => 0,
        SeqMeanTokenMean => 1,
        SeqMeanTokenSum => 2,
        SeqMeanTokenSumNorm => 3,
    }
}

/// Records a one-sweep row kernel (row_stats, row_partials): one workgroup per row of
/// `logits` reads it once, with the row's id from `targets`, in chunks of rows as the
/// row kernels plan them. `params(x, y, first, end)` is a chunk's parameter block (the
/// layouts relative to its windows, its rows), and `outputs` are bound from binding 3
/// on in every chunk.
pub(crate) fn record_row_sweep<P: bytemuck::Pod>(
    ctx: &crate::Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: Kernel,
    logits: &crate::view::LogitsView<'_>,
    targets: &crate::view::TargetsView<'_>,
    params: impl Fn(LayoutParams, LayoutParams, u32, u32) -> P,
    outputs: &[wgpu::BufferBinding<'_>],
) -> Result<()> {
    let rows = logits.rows;
    let limits = ctx.device().limits();
    let quad = logits
        .span()
        .quad_aligned(rows, logits.buffer.size(), &limits);
    let tensors = [
        RowTensor {
            span: logits.span(),
            buffer: logits.buffer,
            quad,
        },
        RowTensor {
            span: targets.span(),
            buffer: targets.buffer,
            quad: false,
        },
    ];
    let chunks = plan_chunks(rows, &[tensors[0].span, tensors[1].span], &limits)?;
    let mut blocks = Vec::with_capacity(chunks.len());
    let mut windows = Vec::with_capacity(chunks.len());
    for &(first, end) in &chunks {
        let (x_bind, x_base) = tensors[0].window(first, end, &limits)?;
        let (y_bind, y_base) = tensors[1].window(first, end, &limits)?;
        blocks.push(params(
            LayoutParams::new("logits", &logits.layout, x_base, rows)?,
            LayoutParams::new("targets", &targets.layout, y_base, rows)?,
            first,
            end,
        ));
        windows.push((x_bind, y_bind, grid(end - first, &limits)));
    }
    let items = if quad {
        (logits.vocab as u64).div_ceil(4)
    } else {
        logits.vocab as u64
    };
    check_loops(
        ctx,
        "logits",
        "the row kernel (a row's sweep)",
        lane_steps(items),
    )?;
    let pipeline = ctx.pipeline(PipelineKey {
        kernel,
        logits: logits.dtype,
        grad: GradOut::None,
        paths: ctx.paths(),
        quad,
        grad_quad: false,
        lane_blocks: ctx.lane_blocks(),
    })?;
    let label = kernel.entry_point();
    let uniforms = ChunkUniforms::new(ctx, &format!("{label} params"), &blocks);
    let dispatches: Vec<_> = windows
        .into_iter()
        .enumerate()
        .map(|(i, (x, y, groups))| {
            let mut entries = vec![entry(0, x), uniforms.entry(1, i), entry(2, y)];
            entries.extend(
                outputs
                    .iter()
                    .enumerate()
                    .map(|(j, o)| entry(3 + j as u32, o.clone())),
            );
            (entries, groups)
        })
        .collect();
    dispatch_chunks(ctx, encoder, label, &pipeline, &dispatches)
}

/// Records a one-workgroup kernel on O(rows) data (prepare, gspo_ratio, select,
/// reduce, advantages): its parameter block at binding 0, then `bindings`.
pub(crate) fn dispatch_single<P: bytemuck::Pod>(
    ctx: &crate::Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: Kernel,
    params: &P,
    bindings: Vec<wgpu::BindGroupEntry<'_>>,
) -> Result<()> {
    let pipeline = ctx.pipeline(PipelineKey::small(kernel, ctx.paths()))?;
    let label = kernel.entry_point();
    let uniform = uniform(ctx, &format!("{label} params"), params);
    let mut entries = vec![whole(0, &uniform)];
    entries.extend(bindings);
    dispatch(ctx, encoder, label, &pipeline, &entries, (1, 1))
}

/// A uniform buffer holding `params`.
pub(crate) fn uniform<T: bytemuck::Pod>(
    ctx: &crate::Context,
    label: &str,
    params: &T,
) -> wgpu::Buffer {
    ctx.buffer_init(
        label,
        bytemuck::bytes_of(params),
        wgpu::BufferUsages::UNIFORM,
    )
}

/// `RowLayout` as the shaders see it (prelude.wgsl): offsets relative to the bound
/// window, strides in elements, all 32-bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct LayoutParams {
    offset: u32,
    row_stride: u32,
    seq_stride: u32,
    rows_per_seq: u32,
}

impl LayoutParams {
    /// `layout` as seen from a binding whose first element is element `base` of the
    /// buffer. The shaders compute absolute row starts in wrapping u32 arithmetic, so
    /// the offset is stored modulo 2^32 and every index inside the window comes out
    /// exact; `rows_per_seq` is clamped to `rows` (one sequence either way).
    pub(crate) fn new(
        arg: &'static str,
        layout: &crate::view::RowLayout,
        base: u64,
        rows: u32,
    ) -> Result<Self> {
        Ok(LayoutParams {
            offset: layout.offset.wrapping_sub(base) as u32,
            row_stride: to_u32(arg, "row stride", layout.row_stride)?,
            seq_stride: to_u32(arg, "sequence stride", layout.seq_stride)?,
            rows_per_seq: layout.rows_per_seq.min(rows).max(1),
        })
    }
}

/// How a tensor's rows lie, for planning chunks (no buffer needed).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowSpan {
    pub arg: &'static str,
    pub layout: crate::view::RowLayout,
    /// Elements per row.
    pub width: u64,
    /// Bytes per element.
    pub elem: u64,
}

impl RowSpan {
    /// Bytes of a quad of elements.
    pub(crate) fn quad_bytes(&self) -> u64 {
        4 * self.elem
    }

    /// Whether the four-at-a-time path can read (or write) these rows: every row starts
    /// on a quad boundary of its window (windows start on 16-byte boundaries), and the
    /// last window can be rounded to whole quads within the buffer.
    pub(crate) fn quad_aligned(&self, rows: u32, buffer_size: u64, limits: &wgpu::Limits) -> bool {
        let l = &self.layout;
        let (_, hi) = l.span(rows as u64, self.width);
        let q = self.quad_bytes();
        (limits.min_storage_buffer_offset_alignment as u64).is_multiple_of(16)
            && l.offset.is_multiple_of(4)
            && l.row_stride.is_multiple_of(4)
            && l.seq_stride.is_multiple_of(4)
            && (hi * self.elem).div_ceil(q) * q <= buffer_size
    }

    /// The same rows narrowed to `width` of their columns from column `col`.
    pub(crate) fn columns(&self, col: u32, width: u32) -> RowSpan {
        let mut s = *self;
        s.layout.offset += col as u64;
        s.width = width as u64;
        s
    }

    /// Whether rows `[first, end)` fit one storage binding (with 32-bit indices).
    fn fits(&self, first: u32, end: u32, limits: &wgpu::Limits) -> bool {
        let (lo, hi) = self.layout.span_rows(first as u64, end as u64, self.width);
        let align = limits.min_storage_buffer_offset_alignment as u64;
        let start = lo * self.elem;
        // the window rounded to whole quads, so that a chunk fits either path
        let size = (hi * self.elem).div_ceil(16) * 16 - (start - start % align);
        size <= limits.max_storage_buffer_binding_size && size / self.elem <= u32::MAX as u64
    }
}

/// A tensor of rows that a row kernel binds one window per chunk of rows.
pub(crate) struct RowTensor<'a> {
    pub span: RowSpan,
    pub buffer: &'a wgpu::Buffer,
    /// Bound as quads of elements (the four-at-a-time path).
    pub quad: bool,
}

impl<'a> RowTensor<'a> {
    /// The binding for rows `[first, end)` and the buffer element it starts at.
    pub(crate) fn window(
        &self,
        first: u32,
        end: u32,
        limits: &wgpu::Limits,
    ) -> Result<(wgpu::BufferBinding<'a>, u64)> {
        let s = &self.span;
        let (lo, hi) = s.layout.span_rows(first as u64, end as u64, s.width);
        let quantum = if self.quad { s.quad_bytes() } else { 4 };
        let (binding, inner) =
            storage_window_in(s.arg, self.buffer, lo, hi, s.elem, quantum, limits)?;
        Ok((binding, lo - inner as u64))
    }
}

/// Splits rows `[0, rows)` into consecutive chunks such that every tensor's rows of a
/// chunk fit one storage binding and a chunk's workgroups fit the dispatch grid. One
/// workgroup still reduces one row, so the results do not depend on the chunking.
pub(crate) fn plan_chunks(
    rows: u32,
    spans: &[RowSpan],
    limits: &wgpu::Limits,
) -> Result<Vec<(u32, u32)>> {
    let max_dim = limits.max_compute_workgroups_per_dimension.max(1) as u64;
    let grid_rows = (max_dim * max_dim).min(u32::MAX as u64) as u32;
    let fits = |a: u32, b: u32| spans.iter().all(|t| t.fits(a, b, limits));
    let mut chunks = Vec::new();
    let mut first = 0u32;
    while first < rows {
        if let Some(t) = spans.iter().find(|t| !t.fits(first, first + 1, limits)) {
            return Err(Error::arg(
                t.arg,
                format!(
                    "row {first} alone spans more than this device binds at once ({} bytes)",
                    limits.max_storage_buffer_binding_size
                ),
            ));
        }
        // the largest end that fits, by bisection (spans grow with the end)
        let (mut ok, mut hi) = (first + 1, rows.min(first.saturating_add(grid_rows)));
        if fits(first, hi) {
            ok = hi;
        } else {
            while hi - ok > 1 {
                let mid = ok + (hi - ok) / 2;
                if fits(first, mid) {
                    ok = mid;
                } else {
                    hi = mid;
                }
            }
        }
        chunks.push((first, ok));
        first = ok;
    }
    Ok(chunks)
}

/// The tensors of one part of a call, for splitting its rows into column blocks: those
/// with a value per column (logits, a gradient: `width` is the row's columns) and those
/// with one per row (token ids).
pub(crate) struct PartSpans {
    pub rows: u32,
    pub per_column: Vec<RowSpan>,
    pub per_row: Vec<RowSpan>,
}

/// A block of columns of every row: its first column and its width.
pub(crate) type ColumnBlock = (u32, u32);

/// How a row kernel splits rows of `vocab` columns: the whole row as one block wherever
/// one row of every part fits one storage binding and a lane's two sweeps of it stay
/// within the adapter's loop limit; otherwise the fewest blocks, each a multiple of
/// four columns wide (so quads and 16-bit words stay whole where the rows allow), such
/// that one row of a block fits and one sweep of it does. The blocks of a row are
/// merged by combine.wgsl, exactly as the shards of a split vocabulary.
pub(crate) fn column_blocks(
    ctx: &crate::Context,
    vocab: u32,
    parts: &[PartSpans],
) -> Result<Vec<ColumnBlock>> {
    let limits = ctx.device().limits();
    let row_bytes = parts
        .iter()
        .flat_map(|p| &p.per_column)
        .map(|s| vocab as u64 * s.elem)
        .max()
        .unwrap_or(0);
    let blocks_of = |k: u32| -> Vec<ColumnBlock> {
        let w = vocab.div_ceil(k).div_ceil(4).saturating_mul(4).max(4);
        (0..vocab)
            .step_by(w as usize)
            .map(|c| (c, w.min(vocab - c)))
            .collect()
    };
    let fits = |blocks: &[ColumnBlock]| {
        let widest = blocks.iter().map(|b| b.1).max().unwrap_or(0) as u64;
        // one block: the fused kernel sweeps the row twice in one launch
        let sweeps = if blocks.len() == 1 { 2 } else { 1 };
        loops_fit(ctx, sweeps * lane_steps(widest))
            && parts.iter().filter(|p| p.rows > 0).all(|p| {
                blocks.iter().all(|&(col, w)| {
                    let spans: Vec<RowSpan> = p
                        .per_column
                        .iter()
                        .map(|s| s.columns(col, w))
                        .chain(p.per_row.iter().copied())
                        .collect();
                    plan_chunks(p.rows, &spans, &limits).is_ok()
                })
            })
    };
    let whole = vec![(0, vocab)];
    if vocab == 0 || fits(&whole) {
        return Ok(whole);
    }
    // at least as many blocks as a binding's worth of bytes in a row
    let mut k = (row_bytes.div_ceil(limits.max_storage_buffer_binding_size.max(1)) as u32).max(2);
    loop {
        let blocks = blocks_of(k);
        if fits(&blocks) {
            return Ok(blocks);
        }
        if blocks.iter().all(|b| b.1 <= 4) {
            return Err(Error::arg(
                parts
                    .iter()
                    .flat_map(|p| p.per_column.first())
                    .next()
                    .map_or("logits", |s| s.arg),
                format!(
                    "no split of a row of {vocab} columns into blocks fits one binding of                      this device ({} bytes)",
                    limits.max_storage_buffer_binding_size
                ),
            ));
        }
        k = k.saturating_add((k / 8).max(1));
    }
}

/// One uniform buffer holding a parameter block per chunk, each at an offset the
/// device accepts for a uniform binding.
pub(crate) struct ChunkUniforms {
    buffer: wgpu::Buffer,
    stride: u64,
    size: u64,
}

impl ChunkUniforms {
    pub(crate) fn new<T: bytemuck::Pod>(ctx: &crate::Context, label: &str, blocks: &[T]) -> Self {
        let align = ctx.device().limits().min_uniform_buffer_offset_alignment as u64;
        let size = std::mem::size_of::<T>() as u64;
        let stride = size.div_ceil(align) * align;
        let mut bytes = vec![0u8; (stride * blocks.len() as u64) as usize];
        for (i, b) in blocks.iter().enumerate() {
            let at = i * stride as usize;
            bytes[at..at + size as usize].copy_from_slice(bytemuck::bytes_of(b));
        }
        let buffer = ctx.buffer_init(label, &bytes, wgpu::BufferUsages::UNIFORM);
        ChunkUniforms {
            buffer,
            stride,
            size,
        }
    }

    pub(crate) fn entry(&self, binding: u32, chunk: usize) -> wgpu::BindGroupEntry<'_> {
        entry(
            binding,
            wgpu::BufferBinding {
                buffer: &self.buffer,
                offset: chunk as u64 * self.stride,
                size: std::num::NonZeroU64::new(self.size),
            },
        )
    }
}

/// Records one compute pass that runs `pipeline` once per chunk, each with its own
/// bind group and grid.
pub(crate) fn dispatch_chunks(
    ctx: &crate::Context,
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    chunks: &[(Vec<wgpu::BindGroupEntry<'_>>, (u32, u32))],
) -> Result<()> {
    ctx.scoped(|| {
        let layout = pipeline.get_bind_group_layout(0);
        let groups: Vec<wgpu::BindGroup> = chunks
            .iter()
            .map(|(entries, _)| {
                ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(label),
                    layout: &layout,
                    entries,
                })
            })
            .collect();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        for (group, (_, (x, y))) in groups.iter().zip(chunks) {
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups(*x, *y, 1);
        }
    })
}

/// Lays `rows` workgroups (at most the square of the per-dimension limit, which
/// `plan_chunks` guarantees) over a 2-D grid.
pub(crate) fn grid(rows: u32, limits: &wgpu::Limits) -> (u32, u32) {
    let x = rows.min(limits.max_compute_workgroups_per_dimension).max(1);
    (x, rows.div_ceil(x))
}

/// How a one-workgroup kernel deals `segments` segments of `len` consecutive items (a
/// sequence's rows, a group's rewards) to teams of lanes (`Teams` of
/// workgroup/sum.wgsl): `size` lanes a segment, a power of two, `WG_SIZE / size`
/// segments a round. The size is the smallest that leaves a lane at most 32 items of a
/// segment (the whole workgroup for one long sequence, a lane each for short ones), and
/// depends on `len` alone: a segment's sum has the same bits whatever else is in the
/// batch, and however the batch is split into parts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Teams {
    pub size: u32,
    pub rounds: u32,
}

impl Teams {
    pub(crate) fn new(segments: u32, len: u32) -> Self {
        let size = len.div_ceil(32).next_power_of_two().min(ROW_WORKGROUP);
        Teams {
            size,
            rounds: segments.div_ceil(ROW_WORKGROUP / size),
        }
    }

    /// A lane's loop iterations for one pass over segments of `len` (its tree included).
    pub(crate) fn steps(&self, len: u32) -> u64 {
        self.rounds as u64 * (len.div_ceil(self.size) as u64 + self.size.trailing_zeros() as u64)
    }
}

/// A lane's share of `items` dealt over the workgroup: its loop's iterations.
pub(crate) fn lane_steps(items: u64) -> u64 {
    items.div_ceil(ROW_WORKGROUP as u64)
}

/// Three workgroup trees of log2(WG_SIZE) steps and a partial quad's four elements:
/// the loops a kernel runs beside its sweeps.
const FIXED_LOOPS: u64 = 3 * ROW_WORKGROUP.trailing_zeros() as u64 + 4;

/// Whether a lane looping `steps` times (plus the fixed loops) stays within the
/// adapter's loop limit ([`Context::loop_limit`]).
fn loops_fit(ctx: &crate::Context, steps: u64) -> bool {
    ctx.loop_limit()
        .is_none_or(|limit| steps + FIXED_LOOPS <= limit)
}

/// `Err` naming `arg` when a kernel's lanes would loop `steps` times (plus the fixed
/// loops: reduction trees, a row's last quad) on an adapter that cuts loops short
/// ([`Context::loop_limit`]), where the kernel would give wrong numbers.
pub(crate) fn check_loops(
    ctx: &crate::Context,
    arg: &'static str,
    kernel: &str,
    steps: u64,
) -> Result<()> {
    const FIXED: u64 = FIXED_LOOPS;
    match ctx.loop_limit() {
        Some(limit) if !loops_fit(ctx, steps) => Err(Error::arg(
            arg,
            format!(
                "{kernel} would loop {} times in one lane, and {} ends a shader's loops \
                 after {limit} iterations in all (Mesa's loop limiter), which would give \
                 wrong numbers; split the call into smaller ones",
                steps + FIXED,
                ctx.describe()
            ),
        )),
        _ => Ok(()),
    }
}

/// Narrows an element count or offset to the u32 the shaders index with.
pub(crate) fn to_u32(arg: &'static str, what: &str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::arg(arg, format!("{what} {v} does not fit in 32 bits")))
}

#[cfg(test)]
mod tests {
    use super::Teams;

    #[test]
    fn teams_fit_the_shape() {
        // one long sequence: the whole workgroup; many short ones: a lane each
        assert_eq!(
            Teams::new(1, 131_072),
            Teams {
                size: 256,
                rounds: 1
            }
        );
        assert_eq!(
            Teams::new(3000, 3),
            Teams {
                size: 1,
                rounds: 12
            }
        );
        assert_eq!(Teams::new(0, 5).rounds, 0);
        // a lane's steps stay near an even share of the rows, whatever the split
        for (segments, len) in [
            (1u32, 1u32),
            (7, 100_000),
            (300, 37),
            (40, 700),
            (5000, 5000),
        ] {
            let t = Teams::new(segments, len);
            let steps = t.rounds as u64 * (len.div_ceil(t.size) as u64 + 8);
            let share = (segments as u64 * len as u64).div_ceil(256);
            assert!(
                steps <= 2 * share + 64,
                "{segments} x {len}: {t:?} takes {steps}"
            );
        }
    }
}
