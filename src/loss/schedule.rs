//! The launch schedule of one call, as a plain value: which kernel runs over which
//! part (and column block), in what order, with how many uniform blocks, and the
//! scratch the call needs. It is a pure function of the configuration, the parts'
//! shapes and the device's capabilities, so it is tested without a GPU; `encode`
//! walks it, and `scratch_bytes` and `launches_for` read it.
//!
//! ```text
//! prepare        1 workgroup     per-row inputs gathered; aggregation weights per sequence
//! [statistics]   every row's statistics first, where a batch-wide term needs them all:
//!                  whole rows     policy_loss (PHASE_STATS)
//!                  column blocks  row_partials per block → combine
//!                  vocab shards   combine of the gathered partials
//! select         1 workgroup     rollout weights, token selection, entropy mask
//! seq_terms      1 workgroup     what a sequence's tokens share: sequence ratios,
//!                                GMPO's and VESPO's sums, the off-policy mask, the
//!                                gradient through a sequence mean
//! policy_loss    1 per row       sweep 1 (stats), token loss, sweep 2 (gradient)
//! reduce         1 workgroup     loss and metrics; per-row log-probs and entropies
//! ```
//!
//! Several parts: `prepare` gathers each part, then one more `prepare` computes the
//! weights of every sequence; each part has its own row launches; `select`'s
//! per-part phases run per part and the others once; one `reduce` covers every row.

use crate::config::{LossConfig, PolicyLossMode};
use crate::error::Result;
use crate::kernels::policy_loss::{PHASE_LOSS, PHASE_STATS};
use crate::kernels::prepare::{GATHER, WEIGHTS};
use crate::kernels::{plan_chunks, select, Caps, ColumnBlock, PartSpans, RowSpan};
use crate::shards::PARTIAL_BYTES;
use crate::view::{DType, RowLayout};

/// Bytes per row and per sequence of the scratch buffers: `rowin`, a `vec4<f32>` a row;
/// `rowout`, ROWOUT_FLOATS (src/shader/abi/) a row; `seqinfo`, a `vec4<f32>` a sequence;
/// `rowaux`, two `vec4<f32>` a row.
pub(crate) const ROWIN_BYTES: u64 = 16;
pub(crate) const ROWOUT_BYTES: u64 = crate::shader::abi::ROWOUT_FLOATS as u64 * 4;
pub(crate) const SEQINFO_BYTES: u64 = 16;
pub(crate) const ROWAUX_BYTES: u64 = 32;
/// An item of the kept scratch: a row's header is two, a kept id's pair one.
pub(crate) const KEPT_ITEM_BYTES: u64 = 8;
/// The stand-in for per-row outputs the caller does not want.
pub(crate) const SPARE_BYTES: u64 = 16;
/// Upper bound of one launch's (or one chunk's) uniform block: parameter blocks are at
/// most 144 bytes and `min_uniform_buffer_offset_alignment` is at most 256.
pub(crate) const UNIFORM_BYTES: u64 = 256;

/// One kernel launch, naming the part (an index into the call's parts) and the column
/// block (an index into the call's blocks) it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// `prepare` over a part, with its phase bits (`GATHER`, `WEIGHTS`).
    Prepare { part: usize, phase: u32 },
    /// `policy_loss` over a part's column block, with its phase bits.
    Row {
        part: usize,
        block: usize,
        phase: u32,
    },
    /// `row_partials` of one column block of a part, into the scratch partials.
    BlockPartials { part: usize, block: usize },
    /// `combine` of a part's column-block partials into its row statistics.
    CombineBlocks { part: usize },
    /// `combine` of every shard's gathered partials into a part's row statistics.
    CombineShards { part: usize },
    /// `seq_terms` over a part's sequences.
    SeqTerms { part: usize },
    /// `select` over a part (or every row) for the phase bits.
    Select { part: usize, phases: u32 },
    /// `reduce` over every row of the call.
    Reduce,
    /// The fused head's chunk `chunk` of logits made: its hidden rows gathered, then
    /// `h·Wᵀ` into the chunk buffer.
    HeadLogits { chunk: usize },
    /// `policy_loss` over the head's chunk buffer, with its phase bits.
    HeadRow { chunk: usize, phase: u32 },
    /// Given kept sets: `kept_partials` over the head's chunk buffer, then `combine`
    /// into the row statistics (of every row: the chunk's are then current).
    HeadKept { chunk: usize },
    /// A computed kept set: `kept_select` over a part's rows (whole), each row's
    /// threshold into the kept scratch.
    KeptSelect { part: usize },
    /// The same over the head's chunk buffer.
    HeadKeptSelect { chunk: usize },
    /// The head's gradients of a chunk: `Gz·W` scattered into ∂L/∂h, `Gzᵀ·h` added to
    /// ∂L/∂W (the chunks in order).
    HeadGrad { chunk: usize },
    /// ∂L/∂W's f32 sum rounded once into a 16-bit (or strided) destination.
    HeadFinish,
}

/// A step and what it allocates: a uniform block per chunk of rows, and other small
/// per-call buffers (combine's column starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Launch {
    pub step: Step,
    pub chunks: u64,
    pub extra_bytes: u64,
}

/// The call's O(rows) scratch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScratchLayout {
    pub rows: u32,
    pub seqs: u32,
    /// select.wgsl's per-row results are needed.
    pub rowaux: bool,
    /// 16-byte partials of column blocks (rows longer than one binding).
    pub partials: u64,
    /// The fused head's buffers: the chunk's logits, its hidden rows and ∂L/∂h in f32,
    /// and ∂L/∂W's f32 sum where it cannot go straight to the caller's buffer.
    pub head: u64,
    /// 8-byte items of the kept scratch (headers and pairs of given kept sets).
    pub kept: u64,
}

impl ScratchLayout {
    pub(crate) fn bytes(&self) -> u64 {
        let aux = if self.rowaux { ROWAUX_BYTES } else { 0 };
        (self.rows.max(1) as u64) * (ROWIN_BYTES + ROWOUT_BYTES + aux)
            + (self.seqs.max(1) as u64) * SEQINFO_BYTES
            + SPARE_BYTES
            + self.partials * PARTIAL_BYTES
            + self.head
            + self.kept * KEPT_ITEM_BYTES
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub launches: Vec<Launch>,
    pub scratch: ScratchLayout,
}

impl Schedule {
    /// Device memory the call may allocate: its scratch, a uniform block per chunk of
    /// every launch, and the launches' other buffers.
    pub(crate) fn bytes(&self) -> u64 {
        let launches: u64 = self
            .launches
            .iter()
            .map(|l| l.chunks * UNIFORM_BYTES + l.extra_bytes)
            .sum();
        self.scratch.bytes() + launches
    }

    /// The steps in order.
    pub(crate) fn steps(&self) -> impl Iterator<Item = Step> + '_ {
        self.launches.iter().map(|l| l.step)
    }
}

/// The shape of one part, for planning memory before a call (as
/// `PolicyLoss::scratch_bytes` does).
pub(crate) struct PartShape {
    pub rows: u32,
    pub layout: RowLayout,
    pub vocab: u32,
    pub dtype: DType,
    pub targets: RowLayout,
    pub grad: Option<(RowLayout, DType)>,
    pub has_old: bool,
}

impl PartShape {
    pub(crate) fn spans(&self) -> PartSpans {
        let logits = RowSpan {
            arg: "logits",
            layout: self.layout,
            width: self.vocab as u64,
            elem: self.dtype.size(),
        };
        let mut per_column = vec![logits];
        if let Some((g, d)) = self.grad {
            per_column.push(crate::kernels::policy_loss::grad_span(&g, self.vocab, d));
        }
        PartSpans {
            rows: self.rows,
            per_column,
            per_row: vec![RowSpan {
                arg: "targets",
                layout: self.targets,
                width: 1,
                elem: 4,
            }],
        }
    }
}

/// The shape of a call: its parts' tensors, their column blocks, and where the row
/// statistics come from.
#[derive(Clone, Copy)]
pub(crate) struct CallShape<'s> {
    pub parts: &'s [PartSpans],
    pub cols: &'s [ColumnBlock],
    pub has_old: bool,
    /// The shard count of a call of `record_shard_loss` (its statistics are merged
    /// from every shard's gathered partials).
    pub shards: Option<usize>,
    /// A call of the fused head: its logits are made chunk by chunk.
    pub head: Option<&'s HeadShape>,
    /// Given kept sets, with this many ids in all: every row's statistics come from
    /// kept_partials (a partial per column block, merged by combine), and the loss
    /// launch scatters the gradient of the kept ids.
    pub kept: Option<u64>,
    /// A kept set computed by top-k, top-p or min-p: `kept_select` finds each row's
    /// threshold before any row launch (whole rows, no shards).
    pub computed: bool,
}

/// The fused head's part of a schedule: its chunks of rows, the matmul launches of one
/// product (one per vocabulary block of W), and which gradients it makes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeadShape {
    pub chunks: Vec<(u32, u32)>,
    pub vocab_blocks: u64,
    pub grad_hidden: bool,
    pub grad_lm_head: bool,
    /// ∂L/∂W is summed in the scratch and rounded into the caller's buffer at the end.
    pub finish: bool,
    pub bytes: u64,
}

/// A part's sequences: its rows grouped by its logits' `rows_per_seq`.
pub(crate) fn part_seqs(p: &PartSpans) -> u32 {
    let rows_per_seq = p.per_column[0].layout.rows_per_seq.min(p.rows).max(1);
    if p.rows == 0 {
        0
    } else {
        p.rows.div_ceil(rows_per_seq)
    }
}

/// The schedule of a call; `Err` where a part's rows cannot be chunked to fit the
/// device's bindings.
pub(crate) fn schedule(cfg: &LossConfig, call: &CallShape<'_>, caps: &Caps) -> Result<Schedule> {
    let mut s = Schedule::default();
    let phases = select::phases(cfg);
    s.scratch.rows = call.parts.iter().map(|p| p.rows).sum();
    s.scratch.seqs = call.parts.iter().map(part_seqs).sum();
    // select's results, and the off-policy mask's and VESPO's per-row values
    s.scratch.rowaux =
        phases != 0 || cfg.off_policy_mask_threshold.is_some() || cfg.mode == PolicyLossMode::Vespo;
    let live: Vec<usize> = (0..call.parts.len())
        .filter(|&i| call.parts[i].rows > 0)
        .collect();
    s.scratch.head = call.head.map_or(0, |h| h.bytes);
    s.scratch.kept = call.kept.map_or(0, |ids| {
        crate::kernels::kept_partials::scratch_items(s.scratch.rows, ids)
    });
    if call.computed {
        s.scratch.kept = crate::kernels::kept_partials::scratch_items(s.scratch.rows, 0);
    }
    if !live.is_empty() {
        let mut b = Builder {
            s: &mut s,
            call,
            caps,
        };
        b.prepare(&live);
        b.statistics(cfg, &live)?;
        b.select(phases, &live);
        if cfg.needs_sequence_pass() {
            live.iter()
                .for_each(|&part| b.push(Step::SeqTerms { part }, 1, 0));
        }
        b.rows(cfg, &live)?;
    }
    s.launches.push(Launch {
        step: Step::Reduce,
        chunks: 1,
        extra_bytes: 0,
    });
    if let Some(h) = call.head {
        if live.is_empty() && (h.grad_hidden || h.grad_lm_head) {
            // no rows: the gradients are still written, as zeros
            s.launches.push(head_grad(h, 0));
        }
        if h.finish {
            s.launches.push(Launch {
                step: Step::HeadFinish,
                chunks: h.vocab_blocks,
                extra_bytes: 0,
            });
        }
    }
    Ok(s)
}

/// The launches of a head chunk's gradients: per vocabulary block a matmul for each
/// product, and ∂L/∂h's scatter.
fn head_grad(h: &HeadShape, chunk: usize) -> Launch {
    let products = h.grad_hidden as u64 + h.grad_lm_head as u64;
    Launch {
        step: Step::HeadGrad { chunk },
        chunks: products * h.vocab_blocks + h.grad_hidden as u64,
        extra_bytes: 0,
    }
}

struct Builder<'b, 's> {
    s: &'b mut Schedule,
    call: &'b CallShape<'s>,
    caps: &'b Caps,
}

impl Builder<'_, '_> {
    fn push(&mut self, step: Step, chunks: u64, extra_bytes: u64) {
        self.s.launches.push(Launch {
            step,
            chunks,
            extra_bytes,
        });
    }

    /// The chunks of rows of part `part` over `spans`.
    fn chunks(&self, part: usize, spans: &[RowSpan]) -> Result<u64> {
        let rows = self.call.parts[part].rows;
        Ok(plan_chunks(rows, spans, &self.caps.limits)?.len() as u64)
    }

    /// The spans the row kernel binds for column block `block` of a part: every
    /// per-column tensor (or the logits alone) restricted to the block, and the ids.
    fn block_spans(&self, part: usize, block: usize, logits_only: bool) -> Vec<RowSpan> {
        let p = &self.call.parts[part];
        let (col, w) = self.call.cols[block];
        let n = if logits_only { 1 } else { p.per_column.len() };
        p.per_column[..n]
            .iter()
            .map(|s| s.columns(col, w))
            .chain(p.per_row.iter().copied())
            .collect()
    }

    /// One part gathers its inputs and computes the weights in one launch; several
    /// gather each, then one launch computes the weights, which need every part's
    /// token counts.
    fn prepare(&mut self, live: &[usize]) {
        match live {
            [one] => self.push(
                Step::Prepare {
                    part: *one,
                    phase: GATHER | WEIGHTS,
                },
                1,
                0,
            ),
            _ => {
                for &part in live {
                    self.push(
                        Step::Prepare {
                            part,
                            phase: GATHER,
                        },
                        1,
                        0,
                    );
                }
                self.push(
                    Step::Prepare {
                        part: live[0],
                        phase: WEIGHTS,
                    },
                    1,
                    0,
                );
            }
        }
    }

    /// Every row's statistics before any gradient, where a batch-wide term needs them
    /// all, or where no launch sees a whole row (column blocks, shards).
    fn statistics(&mut self, cfg: &LossConfig, live: &[usize]) -> Result<()> {
        if self.call.computed && self.call.head.is_none() {
            for &part in live {
                let n = self.chunks(part, &self.block_spans(part, 0, true))?;
                self.push(Step::KeptSelect { part }, n, 0);
            }
        }
        if let Some(h) = self.call.head {
            if cfg.needs_stats_first(self.call.has_old) {
                self.head_chunks(h, PHASE_STATS, false, false);
            }
            return Ok(());
        }
        let blocks = self.call.cols.len();
        // combine binds its column starts and a spare buffer
        let starts = |k: usize| 4 * (k as u64 + 1) + 16;
        if let Some(k) = self.call.shards {
            for &part in live {
                if self.call.kept.is_some() {
                    // this shard's kept pairs for its loss launches, a column block at
                    // a time (its partials are the gathered ones: these are not read)
                    self.s.scratch.partials = blocks as u64 * self.s.scratch.rows.max(1) as u64;
                    for block in 0..blocks {
                        let n = self.chunks(part, &self.block_spans(part, block, true))?;
                        self.push(Step::BlockPartials { part, block }, n, 0);
                    }
                }
                let n = self.chunks(part, &self.call.parts[part].per_row)?;
                self.push(Step::CombineShards { part }, n, starts(k));
            }
        } else if blocks > 1 || self.call.kept.is_some() {
            self.s.scratch.partials = blocks as u64 * self.s.scratch.rows.max(1) as u64;
            for &part in live {
                for block in 0..blocks {
                    let n = self.chunks(part, &self.block_spans(part, block, true))?;
                    self.push(Step::BlockPartials { part, block }, n, 0);
                }
                let n = self.chunks(part, &self.call.parts[part].per_row)?;
                self.push(Step::CombineBlocks { part }, n, starts(blocks));
            }
        } else if cfg.needs_stats_first(self.call.has_old) {
            for &part in live {
                let n = self.chunks(part, &self.block_spans(part, 0, true))?;
                let phase = PHASE_STATS;
                self.push(
                    Step::Row {
                        part,
                        block: 0,
                        phase,
                    },
                    n,
                    0,
                );
            }
        }
        Ok(())
    }

    /// One part: one launch of every phase; several: the per-part phases per part, the
    /// others once over every row or sequence, in phase order.
    fn select(&mut self, phases: u32, live: &[usize]) {
        if phases == 0 {
            return;
        }
        if let [part] = live {
            return self.push(
                Step::Select {
                    part: *part,
                    phases,
                },
                1,
                0,
            );
        }
        for ph in [
            select::ROLLOUT,
            select::SELECT,
            select::RENORM_GATHER,
            select::RENORM_WEIGHTS,
        ] {
            if phases & ph == 0 {
                continue;
            }
            if ph & select::PER_PART != 0 {
                for &part in live {
                    self.push(Step::Select { part, phases: ph }, 1, 0);
                }
            } else {
                self.push(
                    Step::Select {
                        part: live[0],
                        phases: ph,
                    },
                    1,
                    0,
                );
            }
        }
    }

    /// Per chunk of the head: its logits made (gathered rows, one matmul per
    /// vocabulary block), the row kernel over them, and its gradients where wanted.
    /// With `again` (the statistics pass made them first), one chunk's logits are
    /// still in its buffer: only several chunks are made again.
    fn head_chunks(&mut self, h: &HeadShape, phase: u32, grads: bool, again: bool) {
        let kept = self.call.kept.is_some();
        if kept {
            self.s.scratch.partials = self.s.scratch.rows.max(1) as u64;
        }
        for chunk in 0..h.chunks.len() {
            if !(again && h.chunks.len() == 1) {
                self.push(Step::HeadLogits { chunk }, 1 + h.vocab_blocks, 0);
            }
            // a given set's statistics come from its partials (once: the pairs stay
            // in the kept scratch), and its loss launch reads them
            if kept && !again {
                // kept_partials, and combine with its column starts
                self.push(Step::HeadKept { chunk }, 2, 4 * 2 + 16);
            }
            if self.call.computed && !again {
                // the thresholds stay in the kept scratch for a second pass
                self.push(Step::HeadKeptSelect { chunk }, 1, 0);
            }
            if kept && phase == PHASE_STATS {
                continue;
            }
            let phase = if kept { PHASE_LOSS } else { phase };
            self.push(Step::HeadRow { chunk, phase }, 1, 0);
            if grads && (h.grad_hidden || h.grad_lm_head) {
                self.s.launches.push(head_grad(h, chunk));
            }
        }
    }

    /// The loss (and gradient) launches: per part, per column block.
    fn rows(&mut self, cfg: &LossConfig, live: &[usize]) -> Result<()> {
        if let Some(h) = self.call.head {
            let two = cfg.needs_stats_first(self.call.has_old);
            let phase = match two {
                true => PHASE_LOSS,
                false => PHASE_STATS | PHASE_LOSS,
            };
            self.head_chunks(h, phase, true, two);
            return Ok(());
        }
        let split =
            self.call.cols.len() > 1 || self.call.shards.is_some() || self.call.kept.is_some();
        let phase = if split || cfg.needs_stats_first(self.call.has_old) {
            PHASE_LOSS
        } else {
            PHASE_STATS | PHASE_LOSS
        };
        for &part in live {
            for block in 0..self.call.cols.len() {
                let n = self.chunks(part, &self.block_spans(part, block, false))?;
                self.push(Step::Row { part, block, phase }, n, 0);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
