//! Planning rows without a device: how tensors' rows lie, chunks of rows that fit one
//! binding and the dispatch grid, column blocks of rows longer than one binding, a
//! lane's loop counts against the adapter's loop limit, and teams of lanes.

use super::storage_window_in;
use crate::error::{Error, Result};
pub(crate) use crate::shader::abi::{LayoutParams, Teams};
use crate::shader::{row_workgroup, ROW_WORKGROUP};

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

impl crate::view::LogitsView<'_> {
    /// Its rows, for planning chunks.
    pub(crate) fn span(&self) -> RowSpan {
        RowSpan {
            arg: "logits",
            layout: self.layout,
            width: self.vocab as u64,
            elem: self.dtype.size(),
        }
    }
}

impl crate::view::TargetsView<'_> {
    /// Its rows, for planning chunks.
    pub(crate) fn span(&self) -> RowSpan {
        RowSpan {
            arg: "targets",
            layout: self.layout,
            width: 1,
            elem: 4,
        }
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
    /// What one element of a group path's array holds: a 16-byte quad.
    pub(crate) fn quad_bytes(&self) -> u64 {
        16
    }

    /// Whether the group path can read (or write) these rows a group of eight at a
    /// time: every row starts on a group boundary of its window (windows start on
    /// 16-byte boundaries; a group is 16 bytes of 16-bit values, 32 of f32), and the
    /// last window can be rounded to whole 16-byte quads within the buffer. Rows of
    /// 16-bit values then share no 32-bit word.
    pub(crate) fn quad_aligned(&self, rows: u32, buffer_size: u64, limits: &wgpu::Limits) -> bool {
        let l = &self.layout;
        let (_, hi) = l.span(rows as u64, self.width);
        let q = self.quad_bytes();
        (limits.min_storage_buffer_offset_alignment as u64).is_multiple_of(8 * self.elem)
            && l.offset.is_multiple_of(8)
            && l.row_stride.is_multiple_of(8)
            && l.seq_stride.is_multiple_of(8)
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
#[derive(Clone, Debug)]
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
    caps: &Caps,
    vocab: u32,
    parts: &[PartSpans],
) -> Result<Vec<ColumnBlock>> {
    let limits = &caps.limits;
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
        caps.loops_fit(sweeps * caps.row_lane_steps(widest))
            && parts.iter().filter(|p| p.rows > 0).all(|p| {
                blocks.iter().all(|&(col, w)| {
                    let spans: Vec<RowSpan> = p
                        .per_column
                        .iter()
                        .map(|s| s.columns(col, w))
                        .chain(p.per_row.iter().copied())
                        .collect();
                    plan_chunks(p.rows, &spans, limits).is_ok()
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

/// How a one-workgroup kernel deals `segments` segments of `len` consecutive items (a
/// sequence's rows, a group's rewards) to teams of lanes (`Teams` of
/// workgroup/sum.wgsl): `size` lanes a segment, a power of two, `WG_SIZE / size`
/// segments a round. The size is the smallest that leaves a lane at most 32 items of a
/// segment (the whole workgroup for one long sequence, a lane each for short ones), and
/// depends on `len` alone: a segment's sum has the same bits whatever else is in the
/// batch, and however the batch is split into parts.
impl Teams {
    pub(crate) fn new(segments: u32, len: u32) -> Self {
        let size = len.div_ceil(32).next_power_of_two().min(ROW_WORKGROUP);
        Teams {
            size,
            rounds: segments.div_ceil(ROW_WORKGROUP / size),
            ..bytemuck::Zeroable::zeroed()
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

/// [`lane_steps`] of a row kernel on `ctx` (whose lane layout sets its lanes).
pub(crate) fn row_lane_steps(ctx: &crate::Context, items: u64) -> u64 {
    Caps::of(ctx).row_lane_steps(items)
}

/// The items a row's sweep deals to its lanes: groups of eight logits (the shaders'
/// GROUP), and the row's last, partial group.
pub(crate) fn group_items(vocab: u32) -> u64 {
    (vocab as u64).div_ceil(8) + 1
}

/// Three workgroup trees of log2(WG_SIZE) steps, and the eight elements of a row's
/// last group read and written one at a time: the loops a kernel runs beside its
/// sweeps.
const FIXED_LOOPS: u64 = 3 * ROW_WORKGROUP.trailing_zeros() as u64 + 16;

/// Whether a lane looping `steps` times (plus the fixed loops) stays within the
/// adapter's loop limit ([`Context::loop_limit`]).
fn loops_fit(ctx: &crate::Context, steps: u64) -> bool {
    Caps::of(ctx).loops_fit(steps)
}

/// What planning needs of a device, without the device: its limits, the row kernels'
/// lane layout and its loop limit. Schedules are pure functions of it, so they are
/// tested with no GPU.
#[derive(Clone, Debug)]
pub(crate) struct Caps {
    pub limits: wgpu::Limits,
    pub lane_blocks: bool,
    /// [`Context::loop_limit`](crate::Context::loop_limit).
    pub loop_limit: Option<u64>,
}

impl Caps {
    pub(crate) fn of(ctx: &crate::Context) -> Self {
        Caps {
            limits: ctx.device().limits(),
            lane_blocks: ctx.lane_blocks(),
            loop_limit: ctx.loop_limit(),
        }
    }

    /// A lane's loop iterations over `items` of a row dealt to a row kernel's lanes.
    pub(crate) fn row_lane_steps(&self, items: u64) -> u64 {
        items.div_ceil(row_workgroup(self.lane_blocks) as u64)
    }

    /// Whether a lane looping `steps` times (plus the fixed loops) stays within the
    /// loop limit.
    pub(crate) fn loops_fit(&self, steps: u64) -> bool {
        self.loop_limit
            .is_none_or(|limit| steps + FIXED_LOOPS <= limit)
    }
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
                rounds: 1,
                ..bytemuck::Zeroable::zeroed()
            }
        );
        assert_eq!(
            Teams::new(3000, 3),
            Teams {
                size: 1,
                rounds: 12,
                ..bytemuck::Zeroable::zeroed()
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
