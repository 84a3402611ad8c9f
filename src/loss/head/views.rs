//! What a head call reads and writes (device views), and their checks: the shapes
//! against each other, the chunk, and the vocabulary blocks that fit one binding.

use super::{HeadPlan, DEFAULT_CHUNK_BYTES, TILE};
use crate::error::{Error, Result};
use crate::loss::schedule::HeadShape;
use crate::loss::validate::rename;
use crate::loss::{Advantages, PolicyLoss};
use crate::view::{DType, F32View, LogitsView, RowLayout, TargetsView};

/// A matrix `[rows, cols]` in a caller's buffer: columns contiguous, rows laid out by
/// `layout` (in elements; rows grouped in sequences as for logits, so a response
/// slice of `[B, S, H]` hidden states is a view, not a copy).
#[derive(Clone, Copy, Debug)]
pub struct MatrixView<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub dtype: DType,
    pub rows: u32,
    pub cols: u32,
    pub layout: RowLayout,
}

impl<'a> MatrixView<'a> {
    /// Dense `[rows, cols]` at the start of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer, dtype: DType, rows: u32, cols: u32) -> Self {
        Self::from_rows(LogitsView::new(buffer, dtype, rows, cols))
    }

    /// The rows of a logits-shaped view (its `vocab` columns): every constructor of
    /// [`LogitsView`] (`shifted`, `response`, strides) lays out hidden rows too.
    pub fn from_rows(v: LogitsView<'a>) -> Self {
        MatrixView {
            buffer: v.buffer,
            dtype: v.dtype,
            rows: v.rows,
            cols: v.vocab,
            layout: v.layout,
        }
    }

    /// Groups the rows into sequences of `rows_per_seq` rows whose first rows lie
    /// `seq_stride` elements apart.
    pub fn with_sequences(mut self, rows_per_seq: u32, seq_stride: u64) -> Self {
        self.layout.rows_per_seq = rows_per_seq;
        self.layout.seq_stride = seq_stride;
        self
    }

    fn as_rows(&self) -> LogitsView<'a> {
        LogitsView {
            buffer: self.buffer,
            dtype: self.dtype,
            rows: self.rows,
            vocab: self.cols,
            layout: self.layout,
        }
    }

    /// The view's checks (shape against its buffer), errors naming `arg`.
    fn validate(&self, arg: &'static str) -> Result<()> {
        if self.cols == 0 {
            return Err(Error::arg(arg, "needs at least one column"));
        }
        self.as_rows().validate().map_err(|e| rename(e, arg))
    }

    /// Whether every row lies `row_stride` after the one before (one affine matrix,
    /// as a matmul operand is).
    fn evenly_strided(&self) -> bool {
        let l = &self.layout;
        self.rows <= l.rows_per_seq || l.seq_stride == l.rows_per_seq as u64 * l.row_stride
    }
}

/// The device inputs of a head call: hidden states `[rows, H]` (row r predicts
/// `targets[r]`; rows grouped into sequences by hidden's layout) and the lm-head
/// weight `[V, H]` in hidden's dtype (PyTorch's `nn.Linear(H, V).weight`, no bias),
/// and the per-row inputs of [`LossInputs`](crate::LossInputs).
#[derive(Clone, Copy, Debug)]
pub struct HeadInputs<'a> {
    pub hidden: MatrixView<'a>,
    pub lm_head: MatrixView<'a>,
    pub targets: TargetsView<'a>,
    pub mask: F32View<'a>,
    pub advantages: Advantages<'a>,
    pub old_logprobs: Option<F32View<'a>>,
    pub ref_logprobs: Option<F32View<'a>>,
    /// The sampler's log-probs, for the rollout correction.
    pub rollout_logprobs: Option<F32View<'a>>,
    /// Rows of logits held at once (≥ 1); `None`: as many as 256 MiB of f32 logits
    /// (or one binding, if smaller) hold, in whole matmul tiles. More than the rows is
    /// one chunk; more than one binding holds is cut to what it does.
    pub chunk_rows: Option<u32>,
}

impl<'a> HeadInputs<'a> {
    /// On-policy inputs without a reference policy, the default chunk.
    pub fn new(
        hidden: MatrixView<'a>,
        lm_head: MatrixView<'a>,
        targets: TargetsView<'a>,
        mask: F32View<'a>,
        advantages: Advantages<'a>,
    ) -> Self {
        HeadInputs {
            hidden,
            lm_head,
            targets,
            mask,
            advantages,
            old_logprobs: None,
            ref_logprobs: None,
            rollout_logprobs: None,
            chunk_rows: None,
        }
    }

    pub fn with_old_logprobs(mut self, v: F32View<'a>) -> Self {
        self.old_logprobs = Some(v);
        self
    }

    pub fn with_ref_logprobs(mut self, v: F32View<'a>) -> Self {
        self.ref_logprobs = Some(v);
        self
    }

    pub fn with_rollout_logprobs(mut self, v: F32View<'a>) -> Self {
        self.rollout_logprobs = Some(v);
        self
    }

    pub fn with_chunk_rows(mut self, rows: u32) -> Self {
        self.chunk_rows = Some(rows);
        self
    }
}

/// Where a head call's gradients go: ∂L/∂h in hidden's shape and ∂L/∂W in lm_head's,
/// each in its own dtype (rounded once from f32). `None` for neither: the forward.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadGradients<'a> {
    pub hidden: Option<MatrixView<'a>>,
    pub lm_head: Option<MatrixView<'a>>,
}

impl PolicyLoss {
    /// Checks a head call's views against each other and plans its chunks and
    /// vocabulary blocks.
    pub(crate) fn head_plan(
        &self,
        inputs: &HeadInputs<'_>,
        grads: &HeadGradients<'_>,
    ) -> Result<HeadPlan> {
        let (h, w) = (&inputs.hidden, &inputs.lm_head);
        h.validate("hidden")?;
        w.validate("lm_head")?;
        if w.cols != h.cols {
            return Err(Error::arg(
                "lm_head",
                format!(
                    "has {} columns, hidden has H = {}: lm_head is [V, H]",
                    w.cols, h.cols
                ),
            ));
        }
        if w.dtype != h.dtype {
            return Err(Error::arg(
                "lm_head",
                format!("is {}, hidden is {}: both need one dtype", w.dtype, h.dtype),
            ));
        }
        if w.rows == 0 {
            return Err(Error::arg("lm_head", "needs at least one row (V ≥ 1)"));
        }
        if !w.evenly_strided() {
            return Err(Error::arg("lm_head", "rows must lie one row stride apart"));
        }
        check_grads(inputs, grads)?;
        let row_bytes =
            |v: &MatrixView<'_>| v.layout.row_stride.max(v.cols as u64) * v.dtype.size();
        self.plan_dims(&HeadDims {
            rows: h.rows,
            vocab: w.rows,
            hidden: h.cols,
            w_row_bytes: row_bytes(w),
            g_row_bytes: grads.lm_head.as_ref().map(row_bytes),
            grad_hidden: grads.hidden.is_some(),
            grad_lm_head: grads
                .lm_head
                .map(|g| g.dtype == DType::F32 && g.evenly_strided()),
            chunk_rows: inputs.chunk_rows,
        })
    }

    /// A head call's chunks and vocabulary blocks from its shapes alone.
    pub(crate) fn plan_dims(&self, d: &HeadDims) -> Result<HeadPlan> {
        let limits = self.ctx.device().limits();
        let binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let stride = d.vocab.div_ceil(8) * 8;
        let row_bytes = stride as u64 * 4;
        if row_bytes > binding {
            return Err(Error::arg(
                "lm_head",
                format!(
                    "a row of {} f32 logits spans {row_bytes} bytes, more than this device binds at once ({binding} bytes)",
                    d.vocab
                ),
            ));
        }
        let chunk = chunk_rows(d, row_bytes, binding)?;
        let block = vocab_block(d, binding)?;
        Ok(head_shape(d, chunk, block, stride))
    }
}

/// A head call's shapes: rows, V, H, the bytes of a row of W and of ∂L/∂W, which
/// gradients it makes (for ∂L/∂W: whether straight into the caller's f32 rows), and
/// the caller's chunk.
pub(crate) struct HeadDims {
    pub rows: u32,
    pub vocab: u32,
    pub hidden: u32,
    pub w_row_bytes: u64,
    pub g_row_bytes: Option<u64>,
    pub grad_hidden: bool,
    pub grad_lm_head: Option<bool>,
    pub chunk_rows: Option<u32>,
}

fn head_shape(d: &HeadDims, chunk: u32, block: u32, stride: u32) -> HeadPlan {
    let (rows, vocab, hidden) = (d.rows, d.vocab, d.hidden);
    let chunks = (0..rows.max(1))
        .step_by(chunk as usize)
        .map(|a| (a, (a + chunk).min(rows)))
        .collect();
    let n = chunk.min(rows).max(1) as u64;
    let finish = d.grad_lm_head == Some(false);
    let bytes = n * stride as u64 * 4
        + 2 * n * hidden as u64 * 4
        + if finish {
            vocab as u64 * hidden as u64 * 4
        } else {
            0
        };
    HeadPlan {
        shape: HeadShape {
            chunks,
            vocab_blocks: vocab.div_ceil(block) as u64,
            grad_hidden: d.grad_hidden,
            grad_lm_head: d.grad_lm_head.is_some(),
            finish,
            bytes,
        },
        vocab,
        hidden,
        stride,
        block,
    }
}

/// The gradient views: the shapes of hidden and lm_head, buffers apart from every
/// input and from each other.
fn check_grads(inputs: &HeadInputs<'_>, grads: &HeadGradients<'_>) -> Result<()> {
    let (h, w) = (&inputs.hidden, &inputs.lm_head);
    let mut writes = Vec::new();
    for (arg, g, like) in [
        ("grad_hidden", grads.hidden, h),
        ("grad_lm_head", grads.lm_head, w),
    ] {
        let Some(g) = g else { continue };
        g.validate(arg)?;
        if g.rows != like.rows || g.cols != like.cols {
            return Err(Error::arg(
                arg,
                format!(
                    "is [{}, {}], needs [{}, {}]",
                    g.rows, g.cols, like.rows, like.cols
                ),
            ));
        }
        if g.layout.rows_overlap(g.rows, g.cols as u64) {
            return Err(Error::arg(
                arg,
                "rows overlap: each element belongs to one row",
            ));
        }
        writes.push((arg, g.buffer));
    }
    if let [(_, a), (_, b)] = writes[..] {
        if *a == *b {
            return Err(Error::arg(
                "grad_lm_head",
                "shares its buffer with grad_hidden; give each its own",
            ));
        }
    }
    let mut reads = vec![
        ("hidden", h.buffer),
        ("lm_head", w.buffer),
        ("targets", inputs.targets.buffer),
        ("mask", inputs.mask.buffer),
    ];
    reads.extend(inputs.old_logprobs.map(|v| ("old_logprobs", v.buffer)));
    reads.extend(inputs.ref_logprobs.map(|v| ("ref_logprobs", v.buffer)));
    reads.extend(
        inputs
            .rollout_logprobs
            .map(|v| ("rollout_logprobs", v.buffer)),
    );
    crate::view::check_aliasing(&reads, &writes)
}

/// The chunk: the caller's (≥ 1, cut to one binding), or the default.
fn chunk_rows(d: &HeadDims, row_bytes: u64, binding: u64) -> Result<u32> {
    let fits = (binding / row_bytes).min(u32::MAX as u64) as u32;
    let rows = d.rows.max(1);
    match d.chunk_rows {
        Some(0) => Err(Error::arg("chunk_rows", "must be at least 1")),
        Some(n) => Ok(n.min(fits).min(rows)),
        None => {
            let n = (DEFAULT_CHUNK_BYTES.min(binding) / row_bytes).max(1) as u32;
            let n = if n >= TILE { n / TILE * TILE } else { n };
            Ok(n.min(rows))
        }
    }
}

/// Rows of W per matmul: W's rows, and ∂L/∂W's f32 rows, of a block fit one binding.
fn vocab_block(d: &HeadDims, binding: u64) -> Result<u32> {
    let widest = [
        d.w_row_bytes,
        d.hidden as u64 * 4,
        d.g_row_bytes.unwrap_or(0),
    ]
    .into_iter()
    .max()
    .unwrap_or(1)
    .max(1);
    let n = (binding / widest).min(u32::MAX as u64) as u32;
    if n == 0 {
        return Err(Error::arg(
            "lm_head",
            format!("one row spans more than this device binds at once ({binding} bytes)"),
        ));
    }
    let n = if n >= TILE { n / TILE * TILE } else { n };
    Ok(n.min(d.vocab))
}
