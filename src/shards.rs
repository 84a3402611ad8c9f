//! A vocabulary split over shards: the lm-head of a tensor-parallel model, where each
//! rank holds the logits of its slice of the vocabulary (`[T, V_k]`) and never a whole
//! row (Megatron's vocab-parallel cross entropy).
//!
//! Each shard reduces its columns to a partial row statistic; the partials of every
//! shard, gathered in rank order, combine into the row statistics of the whole row
//! (`shaders/combine.wgsl`); each shard then computes the loss and the gradient of its
//! own columns ([`PolicyLoss::record_shard_loss`](crate::PolicyLoss)). The same design
//! splits a row longer than one storage binding into column blocks on one device.
//!
//! # What goes over the wire
//!
//! One shard's partials are [`PARTIAL_FLOATS`] f32 a row (16 bytes), rows in order:
//! with z = logit / temperature over the shard's columns,
//!
//! ```text
//! m = max z                  (the most negative finite f32 when every z is -inf)
//! s = Σ exp(z − m)
//! t = Σ exp(z − m)·(z − m)   (relative to m: no cancellation at large |z|)
//! z_y                        z of the row's target where this shard owns it, else 0
//! ```
//!
//! The gathered buffer is the shards' partials one after the other in rank order,
//! `[K, T, 4]` f32 (an all-gather's output): `K · 16` bytes a row. Combined,
//! `M = max m_k`, `S = Σ s_k e^{m_k − M}`, `T = Σ (t_k + s_k (m_k − M)) e^{m_k − M}`
//! summed in rank order, `lse = M + log S`, `logp = z_y − lse` (from the shard that
//! owns the target), `H = log S − T / S`.

use std::ops::Range;

use crate::error::{Error, Result};

/// f32 values of one shard's partial statistics per row: `m, s, t, z_y`.
pub const PARTIAL_FLOATS: u32 = 4;
/// Bytes of one shard's partial statistics per row.
pub const PARTIAL_BYTES: u64 = PARTIAL_FLOATS as u64 * 4;

/// How the vocabulary `[0, V)` is split over `K` shards, in rank order: shard `k` holds
/// the contiguous columns [`VocabShards::range`]`(k)`, and every token id belongs to
/// exactly one shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VocabShards {
    /// `K + 1` column starts: shard k is `starts[k]..starts[k + 1]`.
    starts: Vec<u32>,
}

impl VocabShards {
    /// Shards of these widths, in rank order (any split, uneven ones included). Every
    /// width is at least 1, and the vocabulary is their sum.
    pub fn new(widths: &[u32]) -> Result<Self> {
        if widths.is_empty() {
            return Err(Error::arg("shards", "is empty: give at least one shard"));
        }
        let mut starts = Vec::with_capacity(widths.len() + 1);
        let mut at = 0u32;
        starts.push(0);
        for (k, &w) in widths.iter().enumerate() {
            if w == 0 {
                return Err(Error::arg(
                    "shards",
                    format!("shard {k} has no columns: every shard needs at least one"),
                ));
            }
            at = at.checked_add(w).ok_or_else(|| {
                Error::arg("shards", "the widths sum to more than 2^32 - 1 columns")
            })?;
            starts.push(at);
        }
        Ok(VocabShards { starts })
    }

    /// `shards` shards of `⌈vocab / shards⌉` columns, the last one holding the rest
    /// (Megatron's split of a vocabulary that does not divide evenly).
    pub fn even(vocab: u32, shards: u32) -> Result<Self> {
        if shards == 0 || shards > vocab {
            return Err(Error::arg(
                "shards",
                format!("{shards} shards of a vocabulary of {vocab}: need 1 ..= {vocab}"),
            ));
        }
        let per = vocab.div_ceil(shards);
        // ⌈V/K⌉ a shard may leave the last ones empty (V = 10, K = 4: 3, 3, 3, 1 is
        // fine, V = 9, K = 4: 3, 3, 3, 0 is not): fall back to widths that differ by 1
        let widths: Vec<u32> = if per * (shards - 1) < vocab {
            (0..shards).map(|k| per.min(vocab - per * k)).collect()
        } else {
            (0..shards)
                .map(|k| vocab / shards + (k < vocab % shards) as u32)
                .collect()
        };
        VocabShards::new(&widths)
    }

    /// Number of shards K.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// Always false: a split has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole vocabulary V.
    pub fn vocab(&self) -> u32 {
        *self.starts.last().expect("at least one shard")
    }

    /// The first column of shard `k`.
    pub fn offset(&self, k: usize) -> u32 {
        self.starts[k]
    }

    /// The number of columns of shard `k`.
    pub fn width(&self, k: usize) -> u32 {
        self.starts[k + 1] - self.starts[k]
    }

    /// The columns of shard `k`.
    pub fn range(&self, k: usize) -> Range<u32> {
        self.starts[k]..self.starts[k + 1]
    }

    /// The widths, in rank order.
    pub fn widths(&self) -> Vec<u32> {
        self.starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// The shard that owns token `id`, if any shard does (`id < V`).
    pub fn owner(&self, id: u32) -> Option<usize> {
        if id >= self.vocab() {
            return None;
        }
        Some(self.starts.partition_point(|&s| s <= id) - 1)
    }

    /// The `K + 1` column starts, as the combine kernel reads them.
    pub(crate) fn starts(&self) -> &[u32] {
        &self.starts
    }

    /// `Err` naming `shard` when `rank` is not one of the shards.
    pub(crate) fn check_rank(&self, rank: usize) -> Result<()> {
        if rank >= self.len() {
            return Err(Error::arg(
                "rank",
                format!("is {rank}, but the vocabulary has {} shards", self.len()),
            ));
        }
        Ok(())
    }

    /// Bytes of one shard's partials for `rows` rows.
    pub fn partial_bytes(&self, rows: u32) -> u64 {
        rows as u64 * PARTIAL_BYTES
    }

    /// Bytes of every shard's partials gathered for `rows` rows: what an all-gather
    /// delivers to each rank.
    pub fn gathered_bytes(&self, rows: u32) -> u64 {
        self.len() as u64 * self.partial_bytes(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::VocabShards;

    #[test]
    fn splits_cover_the_vocabulary_once() {
        for (vocab, k) in [
            (10u32, 4u32),
            (9, 4),
            (7, 7),
            (151_936, 3),
            (5, 1),
            (100, 7),
        ] {
            let s = VocabShards::even(vocab, k).unwrap();
            assert_eq!(s.len(), k as usize);
            assert_eq!(s.vocab(), vocab);
            assert!(s.widths().iter().all(|&w| w > 0), "{vocab}/{k}: {s:?}");
            for id in [0, vocab / 2, vocab - 1] {
                let o = s.owner(id).unwrap();
                assert!(s.range(o).contains(&id));
            }
            assert_eq!(s.owner(vocab), None);
        }
        assert_eq!(VocabShards::even(10, 4).unwrap().widths(), [3, 3, 3, 1]);
        assert_eq!(VocabShards::even(9, 4).unwrap().widths(), [3, 2, 2, 2]);
        assert!(VocabShards::new(&[]).is_err());
        assert!(VocabShards::new(&[3, 0, 2]).is_err());
        assert!(VocabShards::new(&[u32::MAX, 1]).is_err());
        assert!(VocabShards::even(3, 4).is_err());
    }
}
