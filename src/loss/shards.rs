//! A loss over a vocabulary split into shards (a tensor-parallel lm-head, see
//! [`VocabShards`]): each rank's partial row statistics of its columns, then, after the
//! caller's all-gather, the loss of the whole vocabulary and the gradient of the rank's
//! columns.

use super::encode::{block_starts, block_view, grow, vec4_window};
use super::inputs::check_kept;
use super::schedule::KEPT_ITEM_BYTES;
use super::{LossOutputs, LossPart, PolicyLoss};
use crate::error::{Error, Result};
use crate::kernels::combine::{self, CombineOut};
use crate::kernels::kept_partials::{self, KeptCall};
use crate::kernels::row_partials::PartialsOut;
use crate::kernels::{column_blocks, Caps, PartSpans};
use crate::shards::VocabShards;
use crate::view::KeptView;
use crate::view::{F32View, LogitsView, TargetsView};

impl PolicyLoss {
    /// The first step of a loss over a vocabulary split into shards (a tensor-parallel
    /// lm-head, see [`VocabShards`]): shard `rank`'s partial row statistics of its
    /// columns, [`PARTIAL_FLOATS`](crate::PARTIAL_FLOATS) f32 a row written to
    /// `partials` (16-byte aligned). `logits` are the shard's columns (`vocab` =
    /// `shards.width(rank)`); `targets` hold ids of the whole vocabulary. The caller
    /// gathers every shard's partials in rank order (an all-gather) and hands them to
    /// [`PolicyLoss::record_shard_loss`]. Uses the config's temperature alone.
    pub fn record_shard_partials(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shards: &VocabShards,
        rank: usize,
        logits: &LogitsView<'_>,
        targets: &TargetsView<'_>,
        partials: F32View<'_>,
    ) -> Result<()> {
        let x = (logits, targets);
        self.record_shard_partials_with(encoder, shards, rank, x, None, partials)
    }

    /// [`PolicyLoss::record_shard_partials`] over the rows' given kept sets
    /// (docs/MATH.md#given-kept-sets): every shard is given the whole row's CSR, in ids
    /// of the whole vocabulary, and keeps those in its columns; a row with an empty
    /// range keeps every token. The same `kept` goes to
    /// [`PolicyLoss::record_shard_loss`] (in the part's
    /// [`LossInputs::kept`](crate::LossInputs)).
    pub fn record_shard_partials_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shards: &VocabShards,
        rank: usize,
        (logits, targets): (&LogitsView<'_>, &TargetsView<'_>),
        kept: Option<&KeptView<'_>>,
        partials: F32View<'_>,
    ) -> Result<()> {
        shards.check_rank(rank)?;
        check_shard_columns(shards, rank, logits)?;
        logits.validate()?;
        let rows = logits.rows;
        targets.validate(rows)?;
        let mut reads = vec![("logits", logits.buffer), ("targets", targets.buffer)];
        if let Some(k) = kept {
            check_kept(&self.config)?;
            k.validate(rows)?;
            reads.extend([("keep_offsets", k.offsets), ("keep_ids", k.ids)]);
        } else {
            super::inputs::computed_on_whole_rows(&self.config)?;
        }
        crate::view::check_aliasing(&reads, &[("partials", partials.buffer)])?;
        let limits = self.ctx.device().limits();
        let (binding, offset) = vec4_window("partials", &partials, rows as u64, &limits)?;
        let cols = column_blocks(
            &Caps::of(&self.ctx),
            logits.vocab,
            &[PartSpans {
                rows,
                per_column: vec![logits.span()],
                per_row: vec![targets.span()],
            }],
        )?;
        let out = PartialsOut { binding, offset };
        let col_offset = shards.offset(rank);
        let sampler = self.sampler(None)?;
        if let Some(k) = kept {
            return self.shard_kept_partials(
                encoder,
                (logits, targets),
                (&cols, col_offset),
                k,
                out,
            );
        }
        if let [whole] = cols[..] {
            let at = (whole, col_offset);
            return self.record_block_partials(
                encoder,
                (logits, targets),
                at.0,
                at.1,
                out,
                sampler,
            );
        }
        // a shard row longer than one binding: its blocks merged into its partial
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let scratch = &mut *guard;
        let n = cols.len() as u64 * rows as u64;
        let blocks = self.partials_binding(&mut scratch.partials, n, rows)?;
        for (j, &block) in cols.iter().enumerate() {
            let at = PartialsOut {
                binding: blocks.binding.clone(),
                offset: j as u32 * rows,
            };
            self.record_block_partials(encoder, (logits, targets), block, col_offset, at, sampler)?;
        }
        combine::record(
            &self.ctx,
            encoder,
            rows,
            targets,
            &block_starts(&cols, col_offset),
            &blocks,
            &CombineOut::Partial(out),
        )
    }

    /// The second step of a loss over a split vocabulary: merges `gathered`, every
    /// shard's partials in rank order (`[K, rows, 4]` f32, as
    /// [`PolicyLoss::record_shard_partials`] wrote them), into the statistics of whole
    /// rows, then records the loss, the metrics and the per-row outputs of the whole
    /// vocabulary and the gradient of shard `rank`'s columns. The part's logits (and its
    /// gradient) are the shard's columns, its other inputs those of every row. Every rank
    /// that merges the same partials gets the same bits, so the ranks agree on the loss.
    ///
    /// ```no_run
    /// # use wgpu_policy_loss::*;
    /// # fn f(loss: &PolicyLoss, enc: &mut wgpu::CommandEncoder, shards: &VocabShards,
    /// #      rank: usize, inputs: LossInputs<'_>, partials: F32View<'_>,
    /// #      gathered: F32View<'_>, out: &LossBuffers) -> Result<()> {
    /// loss.record_shard_partials(enc, shards, rank, &inputs.logits, &inputs.targets, partials)?;
    /// // ... all-gather every rank's partials into `gathered`, in rank order ...
    /// loss.record_shard_loss(enc, shards, rank, (inputs, Gradient::InPlace), gathered, &out.outputs())
    /// # }
    /// ```
    pub fn record_shard_loss<'a, P: Into<LossPart<'a>>>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shards: &VocabShards,
        rank: usize,
        part: P,
        gathered: F32View<'_>,
        outputs: &LossOutputs<'_>,
    ) -> Result<()> {
        shards.check_rank(rank)?;
        let part: LossPart<'a> = part.into();
        check_shard_columns(shards, rank, &part.inputs.logits)?;
        if part.inputs.temperatures.is_some() {
            // the partials were made under the configuration's one temperature
            return Err(Error::arg(
                "temperatures",
                "per-row temperatures are not taken with vocabulary shards: the shards' \
                 partials use the configuration's one temperature",
            ));
        }
        let shard = ShardCall {
            starts: shards.starts(),
            col_offset: shards.offset(rank),
            vocab: shards.vocab(),
            gathered,
        };
        let plan = self.plan(&[part], Some(outputs), Some(&shard))?;
        self.encode(encoder, &plan, outputs, Some(&shard), None)
    }
}

impl PolicyLoss {
    /// A shard's partials over its rows' kept sets: kept_partials per column block
    /// (the pairs it writes are this call's, not read), merged into the shard's
    /// partial where its rows are split.
    fn shard_kept_partials(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (logits, targets): (&LogitsView<'_>, &TargetsView<'_>),
        (cols, col_offset): (&[crate::kernels::ColumnBlock], u32),
        kept: &KeptView<'_>,
        out: PartialsOut<'_>,
    ) -> Result<()> {
        let rows = logits.rows;
        let sampler = self.sampler(None)?;
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let scratch = &mut *guard;
        let items = kept_partials::scratch_items(rows, kept.len as u64);
        let items = u32::try_from(items).map_err(|_| {
            Error::arg(
                "keep_ids",
                format!("{items} kept ids and row headers are too many"),
            )
        })?;
        let pairs = grow(self, &mut scratch.kept, "kept", items, KEPT_ITEM_BYTES).clone();
        let call = KeptCall {
            view: *kept,
            scratch: &pairs,
            part_row: 0,
            pairs: 2 * rows,
        };
        let split = cols.len() > 1;
        let blocks = match split {
            true => Some(self.partials_binding(
                &mut scratch.partials,
                cols.len() as u64 * rows as u64,
                rows,
            )?),
            false => None,
        };
        for (j, &(col, w)) in cols.iter().enumerate() {
            let at = match &blocks {
                Some(b) => PartialsOut {
                    binding: b.binding.clone(),
                    offset: j as u32 * rows,
                },
                None => PartialsOut {
                    binding: out.binding.clone(),
                    offset: out.offset,
                },
            };
            let block = block_view(logits, col, w);
            let x = (&block, targets);
            let c = col_offset + col;
            kept_partials::record(&self.ctx, encoder, x, None, &sampler, c, &at, &call)?;
        }
        let Some(blocks) = blocks else {
            return Ok(());
        };
        let starts = block_starts(cols, col_offset);
        let merged = CombineOut::Partial(out);
        combine::record(&self.ctx, encoder, rows, targets, &starts, &blocks, &merged)
    }
}

/// `Err` unless `logits` are shard `rank`'s columns of every row.
fn check_shard_columns(shards: &VocabShards, rank: usize, logits: &LogitsView<'_>) -> Result<()> {
    if logits.vocab != shards.width(rank) {
        return Err(Error::arg(
            "logits",
            format!(
                "have {} columns, but shard {rank} holds {} (columns {:?} of {})",
                logits.vocab,
                shards.width(rank),
                shards.range(rank),
                shards.vocab()
            ),
        ));
    }
    Ok(())
}

/// A call of [`PolicyLoss::record_shard_loss`]: where its columns lie, and every
/// shard's partials.
pub(super) struct ShardCall<'s> {
    pub starts: &'s [u32],
    pub col_offset: u32,
    pub vocab: u32,
    pub gathered: F32View<'s>,
}
