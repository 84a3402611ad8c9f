//! A head call's plan from its shapes alone: the chunk of rows, and the segments of
//! the vocabulary its matmuls take one at a time, each inside one block of W, one
//! block of ∂L/∂W, one buffer of ∂L/∂W's f32 sum and one binding. Every buffer the
//! head allocates is sized here, against the device's limits, before any exists.

use super::{HeadPlan, DEFAULT_CHUNK_BYTES, TILE};
use crate::error::{Error, Result};
use crate::loss::schedule::HeadShape;
use crate::loss::PolicyLoss;

/// A head call's shapes: rows, H, the rows of each block of W, the widest row of W
/// and of ∂L/∂W in bytes, which gradients it makes (for ∂L/∂W, the rows of each block
/// and whether the block takes the f32 sum straight into its rows), and the chunk.
pub(crate) struct HeadDims {
    pub rows: u32,
    pub hidden: u32,
    pub w_blocks: Vec<u32>,
    pub w_row_bytes: u64,
    pub g_row_bytes: Option<u64>,
    pub grad_hidden: bool,
    pub grad_lm_head: Option<Vec<(u32, bool)>>,
    pub chunk_rows: Option<u32>,
}

/// Consecutive vocabulary rows the head's matmuls take at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The first row of the vocabulary, and how many.
    pub v0: u32,
    pub rows: u32,
    /// W's block, and the segment's first row in it.
    pub w: (usize, u32),
    /// ∂L/∂W's block and row, where the call makes ∂L/∂W.
    pub g: Option<(usize, u32)>,
    /// The f32 sum's buffer and row, where this block of ∂L/∂W is summed in the
    /// scratch and rounded into the caller's rows at the end.
    pub sum: Option<(usize, u32)>,
}

impl PolicyLoss {
    /// A head call's chunk and vocabulary segments; `Err`, naming the argument and the
    /// sizes, where a buffer it needs cannot exist on this device.
    pub(crate) fn plan_dims(&self, d: &HeadDims) -> Result<HeadPlan> {
        let limits = self.ctx.device().limits();
        let largest = limits.max_buffer_size;
        let binding = limits.max_storage_buffer_binding_size.min(largest);
        let vocab: u64 = d.w_blocks.iter().map(|&n| n as u64).sum();
        // the logits' row stride is V rounded up to 8, which must fit a u32 too
        let stride = u32::try_from(vocab.div_ceil(8) * 8).map_err(|_| {
            Error::arg(
                "lm_head",
                format!("has {vocab} rows: V rounded up to 8 passes 2^32 - 1"),
            )
        })?;
        let vocab = vocab as u32; // at most the stride
        let row_bytes = stride as u64 * 4;
        if row_bytes > binding {
            return Err(Error::arg(
                "lm_head",
                format!(
                    "a row of {vocab} f32 logits spans {row_bytes} bytes, more than this device binds at once ({binding} bytes)"
                ),
            ));
        }
        // the chunk's hidden rows and their gradient are bound whole, as its logits are
        let dense_row = row_bytes.max(d.hidden as u64 * 4);
        if dense_row > binding {
            return Err(Error::arg(
                "hidden",
                format!(
                    "a row of H = {} f32 values spans {dense_row} bytes, more than this device binds at once ({binding} bytes)",
                    d.hidden
                ),
            ));
        }
        let chunk = chunk_rows(d, dense_row, binding)?;
        let block = vocab_block(d, vocab, binding)?;
        let per_sum = sum_rows(d.hidden, block, largest);
        let sums = sum_buffers(d, block, per_sum);
        let segments = segments(d, vocab, block, &sums);
        Ok(head_shape(d, (chunk, stride), vocab, segments, sums))
    }
}

fn head_shape(
    d: &HeadDims,
    (chunk, stride): (u32, u32),
    vocab: u32,
    segments: Vec<Segment>,
    sums: Vec<(u32, u32)>,
) -> HeadPlan {
    let (rows, hidden) = (d.rows, d.hidden);
    let chunks = (0..rows.max(1))
        .step_by(chunk as usize)
        .map(|a| (a, (a + chunk).min(rows)))
        .collect();
    let n = chunk.min(rows).max(1) as u64;
    let sum_bytes: u64 = sums.iter().map(|s| s.1 as u64 * hidden as u64 * 4).sum();
    HeadPlan {
        shape: HeadShape {
            chunks,
            vocab_blocks: segments.len() as u64,
            grad_hidden: d.grad_hidden,
            grad_lm_head: d.grad_lm_head.is_some(),
            finish: !sums.is_empty(),
            bytes: n * stride as u64 * 4 + 2 * n * hidden as u64 * 4 + sum_bytes,
        },
        vocab,
        hidden,
        stride,
        segments,
        sums,
    }
}

/// The chunk: the caller's (≥ 1, cut to one binding), or the default. `dense_row`:
/// the bytes of the widest of a chunk's rows (its logits, its hidden row in f32).
fn chunk_rows(d: &HeadDims, dense_row: u64, binding: u64) -> Result<u32> {
    let fits = (binding / dense_row).min(u32::MAX as u64) as u32;
    let rows = d.rows.max(1);
    match d.chunk_rows {
        Some(0) => Err(Error::arg("chunk_rows", "must be at least 1")),
        Some(n) => Ok(n.min(fits).min(rows)),
        None => {
            let n = (DEFAULT_CHUNK_BYTES.min(binding) / dense_row).max(1) as u32;
            let n = if n >= TILE { n / TILE * TILE } else { n };
            Ok(n.min(rows))
        }
    }
}

/// Rows of W per matmul at most: W's rows, and ∂L/∂W's f32 rows, of a segment fit
/// one binding.
fn vocab_block(d: &HeadDims, vocab: u32, binding: u64) -> Result<u32> {
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
        let arg = match d.g_row_bytes {
            Some(g) if g == widest && g > d.w_row_bytes => "grad_lm_head",
            _ => "lm_head",
        };
        return Err(Error::arg(
            arg,
            format!("one row spans {widest} bytes, more than this device binds at once ({binding} bytes)"),
        ));
    }
    let n = if n >= TILE { n / TILE * TILE } else { n };
    Ok(n.min(vocab).max(1))
}

/// Rows of ∂L/∂W's f32 sum one buffer holds: whole segments of `block` rows (a
/// segment's rows of the sum fit one binding, hence one buffer).
fn sum_rows(hidden: u32, block: u32, largest: u64) -> u32 {
    let n = (largest / (hidden as u64 * 4).max(1)).min(u32::MAX as u64) as u32;
    (n / block * block).max(block)
}

/// ∂L/∂W's f32 sum, where a block of it is not the caller's f32 rows: the buffers
/// (first row, rows), each at most `per` rows, a block's rows shared evenly among
/// as few buffers as hold them.
fn sum_buffers(d: &HeadDims, block: u32, per: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut v0 = 0u32;
    for &(rows, direct) in d.grad_lm_head.iter().flatten() {
        if !direct {
            let k = rows.div_ceil(per).max(1);
            let each = rows
                .div_ceil(k)
                .div_ceil(block)
                .saturating_mul(block)
                .min(per);
            let mut at = 0;
            while at < rows {
                let n = each.min(rows - at);
                out.push((v0 + at, n));
                at += n;
            }
        }
        v0 += rows;
    }
    out
}

/// The vocabulary cut at every block of W, of ∂L/∂W and of its sum, and into runs of
/// at most `block` rows.
fn segments(d: &HeadDims, vocab: u32, block: u32, sums: &[(u32, u32)]) -> Vec<Segment> {
    let starts = |rows: &mut dyn Iterator<Item = u32>| -> Vec<(u32, u32)> {
        let mut at = 0;
        rows.map(|n| {
            at += n;
            (at - n, n)
        })
        .collect()
    };
    let w = starts(&mut d.w_blocks.iter().copied());
    let g = d
        .grad_lm_head
        .as_ref()
        .map(|b| starts(&mut b.iter().map(|&(n, _)| n)));
    // the block holding row v, and v's row in it
    let find = |blocks: &[(u32, u32)], v: u32| {
        blocks
            .iter()
            .position(|&(a, n)| v >= a && v - a < n)
            .map(|i| (i, v - blocks[i].0, blocks[i].0 + blocks[i].1))
    };
    let mut out = Vec::new();
    let mut v0 = 0;
    while v0 < vocab {
        let (wi, wr, w_end) = find(&w, v0).expect("W's blocks cover the vocabulary");
        let mut end = (v0 + block.min(vocab - v0)).min(w_end);
        let gi = g.as_deref().and_then(|g| find(g, v0));
        let si = find(sums, v0);
        for (_, _, e) in gi.iter().chain(&si) {
            end = end.min(*e);
        }
        out.push(Segment {
            v0,
            rows: end - v0,
            w: (wi, wr),
            g: gi.map(|(i, r, _)| (i, r)),
            sum: si.map(|(i, r, _)| (i, r)),
        });
        v0 = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(w: Vec<u32>, g: Option<Vec<(u32, bool)>>) -> HeadDims {
        HeadDims {
            rows: 4,
            hidden: 8,
            w_blocks: w,
            w_row_bytes: 16,
            g_row_bytes: Some(32),
            grad_hidden: true,
            grad_lm_head: g,
            chunk_rows: None,
        }
    }

    /// Every row of the vocabulary in one segment, in order, each segment inside one
    /// block of W, of ∂L/∂W and of its sum, at most `block` rows.
    fn check(d: &HeadDims, block: u32, sums: &[(u32, u32)], segs: &[Segment]) {
        let vocab: u32 = d.w_blocks.iter().sum();
        let mut v = 0;
        for s in segs {
            assert_eq!(s.v0, v);
            assert!(s.rows >= 1 && s.rows <= block);
            assert!(s.w.1 + s.rows <= d.w_blocks[s.w.0]);
            if let (Some((gi, gr)), Some(g)) = (s.g, &d.grad_lm_head) {
                assert!(gr + s.rows <= g[gi].0);
                assert_eq!(s.sum.is_some(), !g[gi].1);
            }
            if let Some((si, sr)) = s.sum {
                assert_eq!(sums[si].0 + sr, s.v0);
                assert!(sr + s.rows <= sums[si].1);
            }
            v += s.rows;
        }
        assert_eq!(v, vocab);
    }

    #[test]
    fn segments_cut_at_every_block_and_binding() {
        let d = dims(
            vec![300, 1, 699],
            Some(vec![(250, false), (500, true), (250, false)]),
        );
        let (block, per) = (128, sum_rows(8, 128, 200 * 32));
        assert_eq!(per, 128);
        let sums = sum_buffers(&d, block, per);
        // 250 rows in two buffers of at most 128 rows, evenly: 128 + 122
        assert_eq!(sums, [(0, 128), (128, 122), (750, 128), (878, 122)]);
        let segs = segments(&d, 1000, block, &sums);
        check(&d, block, &sums, &segs);
        assert!(segs.iter().any(|s| s.v0 == 300 && s.rows == 1));
        let plain = dims(vec![1000], None);
        let segs = segments(&plain, 1000, 128, &[]);
        check(&plain, 128, &[], &segs);
        assert_eq!(segs.len(), 8);
    }
}
