//! What a head call reads and writes (device views), and their checks: the shapes
//! against each other, the blocks of `[V, H]` matrices, the buffers apart.

use super::plan::HeadDims;
use super::HeadPlan;
use crate::error::{Error, Result};
use crate::loss::validate::rename;
use crate::loss::{Advantages, PolicyLoss};
use crate::view::{DType, F32View, LogitsView, RowLayout, TargetsView};

/// A matrix `[rows, cols]` in a caller's buffer: columns contiguous, rows laid out by
/// `layout` (in elements; rows grouped in sequences as for logits, so a response
/// slice of `[B, S, H]` hidden states is a view, not a copy).
#[derive(Clone, Copy, Debug)]
pub struct MatrixView<'a> {
    /// The caller's buffer; needs `BufferUsages::STORAGE`.
    pub buffer: &'a wgpu::Buffer,
    /// The elements' type (hidden states and weight share one).
    pub dtype: DType,
    /// The number of rows: the call's rows for hidden states, `V` (or a block's share of
    /// it) for the weight.
    pub rows: u32,
    /// The number of columns: the hidden width `H`; at least 1.
    pub cols: u32,
    /// Where each row starts, in elements of `dtype`.
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

    pub(super) fn as_rows(&self) -> LogitsView<'a> {
        LogitsView {
            buffer: self.buffer,
            dtype: self.dtype,
            rows: self.rows,
            vocab: self.cols,
            layout: self.layout,
        }
    }

    /// The view's checks (shape against its buffer), errors naming `arg`.
    pub(super) fn validate(&self, arg: &'static str) -> Result<()> {
        if self.cols == 0 {
            return Err(Error::arg(arg, "needs at least one column"));
        }
        self.as_rows().validate().map_err(|e| rename(e, arg))
    }

    /// Whether every row lies `row_stride` after the one before (one affine matrix,
    /// as a matmul operand is).
    pub(super) fn evenly_strided(&self) -> bool {
        let l = &self.layout;
        self.rows <= l.rows_per_seq || l.seq_stride == l.rows_per_seq as u64 * l.row_stride
    }
}

/// A `[V, H]` matrix of the head (the lm-head weight, or its gradient) in one view, or
/// cut into vocabulary blocks: views of consecutive rows (block 0 rows `0 .. n₀`,
/// block 1 the next `n₁`, …) for a matrix larger than one buffer of the device holds
/// (`max_buffer_size`; f32 `[152064, 3584]` is 2.18 GB), as logits come in
/// [`LossPart`](crate::LossPart)s. A view converts into it with `.into()`.
#[derive(Clone, Copy, Debug)]
pub enum VocabBlocks<'a> {
    /// The whole `[V, H]` matrix in one view.
    One(MatrixView<'a>),
    /// At least one block, each of H columns and at least one row, in one dtype; the
    /// blocks' rows sum to V. Blocks may share a buffer where they do not overlap.
    Blocks(&'a [MatrixView<'a>]),
}

impl<'a> VocabBlocks<'a> {
    /// The views, in vocabulary order (one for [`VocabBlocks::One`]).
    pub fn blocks(&self) -> &[MatrixView<'a>] {
        match self {
            VocabBlocks::One(v) => std::slice::from_ref(v),
            VocabBlocks::Blocks(b) => b,
        }
    }

    /// The rows of every block together (V).
    pub fn rows(&self) -> u64 {
        self.blocks().iter().map(|b| b.rows as u64).sum()
    }

    /// The first block's dtype.
    pub fn dtype(&self) -> Option<DType> {
        self.blocks().first().map(|b| b.dtype)
    }
}

impl<'a> From<MatrixView<'a>> for VocabBlocks<'a> {
    fn from(v: MatrixView<'a>) -> Self {
        VocabBlocks::One(v)
    }
}

impl<'a> From<&'a [MatrixView<'a>]> for VocabBlocks<'a> {
    fn from(b: &'a [MatrixView<'a>]) -> Self {
        VocabBlocks::Blocks(b)
    }
}

/// The device inputs of a head call: hidden states `[rows, H]` (row r predicts
/// `targets[r]`; rows grouped into sequences by hidden's layout) and the lm-head
/// weight `[V, H]` in hidden's dtype (PyTorch's `nn.Linear(H, V).weight`, no bias; one
/// view, or vocabulary blocks), and the per-row inputs of
/// [`LossInputs`](crate::LossInputs).
#[derive(Clone, Copy, Debug)]
pub struct HeadInputs<'a> {
    /// The hidden states `h`, `[rows, H]` (docs/MATH.md#the-fused-linear-head).
    pub hidden: MatrixView<'a>,
    /// The lm-head weight `W`, `[V, H]` in hidden's dtype, its rows one row stride apart.
    pub lm_head: VocabBlocks<'a>,
    /// The sampled id of each row, a row of W
    /// ([`LossInputs::targets`](crate::LossInputs::targets)).
    pub targets: TargetsView<'a>,
    /// The response mask of each row ([`LossInputs::mask`](crate::LossInputs::mask)).
    pub mask: F32View<'a>,
    /// One per sequence or one per row ([`Advantages`]).
    pub advantages: Advantages<'a>,
    /// The behaviour policy's log-prob of each row, for the PPO ratio; `None`: on-policy.
    pub old_logprobs: Option<F32View<'a>>,
    /// The reference policy's log-prob of each row, for the KL term.
    pub ref_logprobs: Option<F32View<'a>>,
    /// The sampler's log-probs, for the rollout correction.
    pub rollout_logprobs: Option<F32View<'a>>,
    /// The sampler's temperature of each row (see [`LossInputs`](crate::LossInputs)).
    pub temperatures: Option<F32View<'a>>,
    /// The sampler's given kept set of each row (see [`LossInputs`](crate::LossInputs)):
    /// ids of the whole vocabulary, W's rows.
    pub kept: Option<crate::view::KeptView<'a>>,
    /// Rows of logits held at once (≥ 1); `None`: as many as 256 MiB of f32 logits
    /// (or one binding, if smaller) hold, in whole matmul tiles. More than the rows is
    /// one chunk; more than one binding holds is cut to what it does.
    pub chunk_rows: Option<u32>,
}

impl<'a> HeadInputs<'a> {
    /// On-policy inputs without a reference policy, the default chunk.
    pub fn new(
        hidden: MatrixView<'a>,
        lm_head: impl Into<VocabBlocks<'a>>,
        targets: TargetsView<'a>,
        mask: F32View<'a>,
        advantages: Advantages<'a>,
    ) -> Self {
        HeadInputs {
            hidden,
            lm_head: lm_head.into(),
            targets,
            mask,
            advantages,
            old_logprobs: None,
            ref_logprobs: None,
            rollout_logprobs: None,
            temperatures: None,
            kept: None,
            chunk_rows: None,
        }
    }

    /// With the behaviour policy's log-probs ([`HeadInputs::old_logprobs`]).
    pub fn with_old_logprobs(mut self, v: F32View<'a>) -> Self {
        self.old_logprobs = Some(v);
        self
    }

    /// With the reference policy's log-probs ([`HeadInputs::ref_logprobs`]).
    pub fn with_ref_logprobs(mut self, v: F32View<'a>) -> Self {
        self.ref_logprobs = Some(v);
        self
    }

    /// With the sampler's log-probs ([`HeadInputs::rollout_logprobs`]).
    pub fn with_rollout_logprobs(mut self, v: F32View<'a>) -> Self {
        self.rollout_logprobs = Some(v);
        self
    }

    /// With a temperature per row ([`HeadInputs::temperatures`]).
    pub fn with_temperatures(mut self, v: F32View<'a>) -> Self {
        self.temperatures = Some(v);
        self
    }

    /// With the sampler's given kept sets ([`HeadInputs::kept`]).
    pub fn with_kept(mut self, v: crate::view::KeptView<'a>) -> Self {
        self.kept = Some(v);
        self
    }

    /// With `rows` rows of logits held at once ([`HeadInputs::chunk_rows`]).
    pub fn with_chunk_rows(mut self, rows: u32) -> Self {
        self.chunk_rows = Some(rows);
        self
    }
}

/// Where a head call's gradients go: ∂L/∂h in hidden's shape and ∂L/∂W `[V, H]`
/// (one view, or vocabulary blocks of their own, whatever W's are), each in its own
/// dtype (rounded once from f32). `None` for neither: the forward.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadGradients<'a> {
    /// ∂L/∂h, `[rows, H]`, in its own buffer; its rows of weight 0 are written 0.
    pub hidden: Option<MatrixView<'a>>,
    /// ∂L/∂W, `[V, H]`, in buffers of its own; every element is written.
    pub lm_head: Option<VocabBlocks<'a>>,
}

impl PolicyLoss {
    /// Checks a head call's views against each other and plans its chunk and
    /// vocabulary segments.
    pub(crate) fn head_plan(
        &self,
        inputs: &HeadInputs<'_>,
        grads: &HeadGradients<'_>,
    ) -> Result<HeadPlan> {
        let h = &inputs.hidden;
        h.validate("hidden")?;
        let w_blocks = check_blocks("lm_head", &inputs.lm_head, h.cols, false)?;
        for (i, w) in inputs.lm_head.blocks().iter().enumerate() {
            let at = block_name(&inputs.lm_head, i);
            if w.dtype != h.dtype {
                return Err(Error::arg(
                    "lm_head",
                    format!(
                        "{at}is {}, hidden is {}: both need one dtype",
                        w.dtype, h.dtype
                    ),
                ));
            }
            if !w.evenly_strided() {
                return Err(Error::arg(
                    "lm_head",
                    format!("{at}rows must lie one row stride apart"),
                ));
            }
        }
        let g_blocks = check_grads(inputs, grads)?;
        let row_bytes =
            |v: &MatrixView<'_>| v.layout.row_stride.max(v.cols as u64) * v.dtype.size();
        let widest = |m: &VocabBlocks<'_>| m.blocks().iter().map(row_bytes).max().unwrap_or(0);
        self.plan_dims(&HeadDims {
            rows: h.rows,
            hidden: h.cols,
            w_blocks,
            w_row_bytes: widest(&inputs.lm_head),
            g_row_bytes: grads.lm_head.as_ref().map(widest),
            grad_hidden: grads.hidden.is_some(),
            grad_lm_head: g_blocks,
            chunk_rows: inputs.chunk_rows,
        })
    }
}

/// "block i: " where the matrix comes in blocks (else nothing), for its errors.
fn block_name(m: &VocabBlocks<'_>, i: usize) -> String {
    match m {
        VocabBlocks::One(_) => String::new(),
        VocabBlocks::Blocks(_) => format!("block {i}: "),
    }
}

/// The checks of a `[V, H]` matrix's blocks (each view against its buffer, H columns,
/// at least one row, one dtype; for an output, rows apart and blocks apart), errors
/// naming `arg` and the block. The blocks' rows.
fn check_blocks(
    arg: &'static str,
    m: &VocabBlocks<'_>,
    cols: u32,
    output: bool,
) -> Result<Vec<u32>> {
    let blocks = m.blocks();
    let Some(first) = blocks.first() else {
        return Err(Error::arg(arg, "has no blocks: give at least one view"));
    };
    for (i, b) in blocks.iter().enumerate() {
        let at = block_name(m, i);
        b.validate(arg).map_err(|e| match e {
            Error::InvalidArgument { reason, .. } => Error::arg(arg, format!("{at}{reason}")),
            other => other,
        })?;
        let bad = if b.cols != cols {
            Some(format!(
                "has {} columns, hidden has H = {cols}: {arg} is [V, H]",
                b.cols
            ))
        } else if b.rows == 0 {
            Some("needs at least one row (V ≥ 1)".to_string())
        } else if b.dtype != first.dtype {
            Some(format!(
                "is {}, block 0 is {}: the blocks need one dtype",
                b.dtype, first.dtype
            ))
        } else if output && b.layout.rows_overlap(b.rows, b.cols as u64) {
            Some("rows overlap: each element belongs to one row".to_string())
        } else {
            None
        };
        if let Some(reason) = bad {
            return Err(Error::arg(arg, format!("{at}{reason}")));
        }
    }
    if output {
        blocks_apart(arg, blocks)?;
    }
    Ok(blocks.iter().map(|b| b.rows).collect())
}

/// Blocks of an output that share a buffer must not share a byte.
fn blocks_apart(arg: &'static str, blocks: &[MatrixView<'_>]) -> Result<()> {
    let bytes = |b: &MatrixView<'_>| {
        let (lo, hi) = b.layout.span(b.rows as u64, b.cols as u64);
        (lo * b.dtype.size(), hi * b.dtype.size())
    };
    for (j, b) in blocks.iter().enumerate() {
        let (lo, hi) = bytes(b);
        for (i, a) in blocks[..j].iter().enumerate() {
            let (alo, ahi) = bytes(a);
            if a.buffer == b.buffer && lo < ahi && alo < hi {
                return Err(Error::arg(
                    arg,
                    format!("block {j} overlaps block {i} in their buffer"),
                ));
            }
        }
    }
    Ok(())
}

/// The gradient views: the shapes of hidden and lm_head, buffers apart from every
/// input and from each other. ∂L/∂W's blocks: their rows, and whether each takes the
/// f32 sum straight into its rows.
fn check_grads(
    inputs: &HeadInputs<'_>,
    grads: &HeadGradients<'_>,
) -> Result<Option<Vec<(u32, bool)>>> {
    let h = &inputs.hidden;
    let mut writes = Vec::new();
    if let Some(g) = &grads.hidden {
        g.validate("grad_hidden")?;
        if g.rows != h.rows || g.cols != h.cols {
            return Err(Error::arg(
                "grad_hidden",
                format!(
                    "is [{}, {}], needs [{}, {}]",
                    g.rows, g.cols, h.rows, h.cols
                ),
            ));
        }
        if g.layout.rows_overlap(g.rows, g.cols as u64) {
            return Err(Error::arg(
                "grad_hidden",
                "rows overlap: each element belongs to one row",
            ));
        }
        writes.push(("grad_hidden", g.buffer));
    }
    let vocab = inputs.lm_head.rows();
    let g_blocks = match &grads.lm_head {
        None => None,
        Some(g) => {
            let rows = check_blocks("grad_lm_head", g, h.cols, true)?;
            let total = g.rows();
            if total != vocab {
                let reason = match g {
                    VocabBlocks::One(v) => {
                        format!("is [{}, {}], needs [{vocab}, {}]", v.rows, v.cols, h.cols)
                    }
                    VocabBlocks::Blocks(_) => {
                        format!("the blocks hold {total} rows, lm_head has V = {vocab}")
                    }
                };
                return Err(Error::arg("grad_lm_head", reason));
            }
            let direct = g
                .blocks()
                .iter()
                .map(|b| b.dtype == DType::F32 && b.evenly_strided());
            writes.extend(g.blocks().iter().map(|b| ("grad_lm_head", b.buffer)));
            Some(rows.into_iter().zip(direct).collect())
        }
    };
    if let Some((_, gh)) = writes.first().filter(|w| w.0 == "grad_hidden") {
        if writes[1..].iter().any(|(_, b)| *b == *gh) {
            return Err(Error::arg(
                "grad_lm_head",
                "shares its buffer with grad_hidden; give each its own",
            ));
        }
    }
    crate::view::check_aliasing(&reads_of(inputs), &writes)?;
    Ok(g_blocks)
}

/// Every buffer a head call reads, by its argument's name.
fn reads_of<'a>(inputs: &HeadInputs<'a>) -> Vec<(&'static str, &'a wgpu::Buffer)> {
    let mut reads = vec![
        ("hidden", inputs.hidden.buffer),
        ("targets", inputs.targets.buffer),
        ("mask", inputs.mask.buffer),
    ];
    reads.extend(
        inputs
            .lm_head
            .blocks()
            .iter()
            .map(|w| ("lm_head", w.buffer)),
    );
    for (arg, v) in [
        ("old_logprobs", inputs.old_logprobs),
        ("ref_logprobs", inputs.ref_logprobs),
        ("rollout_logprobs", inputs.rollout_logprobs),
        ("temperatures", inputs.temperatures),
    ] {
        reads.extend(v.map(|v| (arg, v.buffer)));
    }
    reads
}
