//! A host batch checked before anything is uploaded: its shapes, then the values of its
//! per-row inputs (docs/MATH.md#bad-input), in O(rows).

use super::HostPart;
use crate::config::LossConfig;
use crate::error::{Error, Result, RowInput};

/// A host part's checked shape.
pub(super) struct Shape {
    pub rows: u32,
    pub rows_per_seq: u32,
    pub per_token: bool,
}

impl HostPart<'_> {
    /// Checks this part as a call of [`Context::policy_loss_parts`](crate::Context)
    /// would, without a device: its shapes, and its per-row inputs
    /// (docs/MATH.md#bad-input): a mask that is negative, NaN or ±inf on any row, or a
    /// NaN or ±inf advantage, old, ref or rollout log-prob (the latter only where
    /// `config` reads it: the rollout correction, the off-policy mask) on a masked-in
    /// row, is [`Error::InvalidInput`] naming the tensor and the first bad row. Token
    /// ids are the device's to check (they need the vocabulary's bound, not a value
    /// test).
    pub fn check(&self, config: &LossConfig) -> Result<()> {
        self.check_at(config, 0).map(|_| ())
    }

    /// [`HostPart::check`] with the rows numbered from `first_row` (a later part).
    pub(super) fn check_at(&self, config: &LossConfig, first_row: usize) -> Result<Shape> {
        let shape = self.shape()?;
        self.check_values(config, &shape, first_row)?;
        Ok(shape)
    }

    fn shape(&self) -> Result<Shape> {
        let batch = &self.batch;
        let vocab = batch.vocab;
        if vocab == 0 {
            return Err(Error::arg("vocab", "must be at least 1"));
        }
        if !batch.logits.len().is_multiple_of(vocab as usize) {
            return Err(Error::arg(
                "logits",
                format!(
                    "length {} is not a multiple of vocab {vocab}",
                    batch.logits.len()
                ),
            ));
        }
        let rows = batch.logits.len() / vocab as usize;
        let rows_u32 = u32::try_from(rows).map_err(|_| Error::arg("logits", "too many rows"))?;
        let rps = batch.rows_per_seq.unwrap_or(rows_u32.max(1));
        if rps == 0 {
            return Err(Error::arg("rows_per_seq", "must be at least 1"));
        }
        let seqs = (rows_u32.div_ceil(rps)).max(1) as usize;
        for (arg, len) in [("targets", batch.targets.len()), ("mask", batch.mask.len())]
            .into_iter()
            .chain(batch.old_logprobs.map(|x| ("old_logprobs", x.len())))
            .chain(batch.ref_logprobs.map(|x| ("ref_logprobs", x.len())))
            .chain(self.rollout_logprobs.map(|x| ("rollout_logprobs", x.len())))
            .chain(batch.temperatures.map(|x| ("temperatures", x.len())))
        {
            if len != rows {
                return Err(Error::arg(
                    arg,
                    format!("has {len} values for {rows} logits rows"),
                ));
            }
        }
        if let Some(k) = &batch.kept {
            k.validate(rows, vocab as usize)?;
        }
        let per_token = match batch.advantages.len() {
            n if n == seqs => false,
            n if n == rows => true,
            n => {
                return Err(Error::arg(
                    "advantages",
                    format!("has {n} values; expected {seqs} (per sequence) or {rows} (per row)"),
                ))
            }
        };
        Ok(Shape {
            rows: rows_u32,
            rows_per_seq: rps,
            per_token,
        })
    }

    /// The first bad row, each row's inputs taken in [`RowInput::ALL`]'s order, as the
    /// device's reduce kernel counts them: both name the same row and tensor.
    fn check_values(&self, config: &LossConfig, shape: &Shape, first_row: usize) -> Result<()> {
        let b = &self.batch;
        if b.temperatures.is_some() {
            crate::loss::check_temperatures(config)?;
        }
        if b.kept.is_some() {
            crate::loss::check_kept(config)?;
        }
        let rollout = self
            .rollout_logprobs
            .filter(|_| config.reads_rollout_logp());
        let advantage = |r: usize| match shape.per_token {
            true => b.advantages[r],
            false => b.advantages[r / shape.rows_per_seq as usize],
        };
        for (r, &m) in b.mask.iter().enumerate() {
            let bad = |tensor, value| {
                Err(Error::InvalidInput {
                    tensor,
                    row: first_row + r,
                    value,
                })
            };
            if RowInput::Mask.is_bad(m) {
                return bad(RowInput::Mask, m);
            }
            if m == 0.0 {
                continue;
            }
            for (tensor, value) in [
                (RowInput::Advantages, Some(advantage(r))),
                (RowInput::OldLogprobs, b.old_logprobs.map(|x| x[r])),
                (RowInput::RefLogprobs, b.ref_logprobs.map(|x| x[r])),
                (RowInput::RolloutLogprobs, rollout.map(|x| x[r])),
                (RowInput::Temperatures, b.temperatures.map(|x| x[r])),
            ] {
                if let Some(v) = value.filter(|&v| tensor.is_bad(v)) {
                    return bad(tensor, v);
                }
            }
            if let Some(k) = &b.kept {
                let rows = (b.targets, b.mask);
                check_kept_targets(k, rows, b.vocab, r..r + 1, first_row)?;
            }
        }
        Ok(())
    }
}

/// A read row's target must be in its kept set (docs/MATH.md#bad-input: an
/// [`Error::InvalidInput`] naming `targets` and the row, numbered from `first_row`):
/// the part's rows `rows`. Ids outside the vocabulary are the device's to report, as
/// without a kept set.
pub(super) fn check_kept_targets(
    kept: &crate::reference::sampler::KeptSets<'_>,
    (targets, mask): (&[u32], &[f32]),
    vocab: u32,
    rows: std::ops::Range<usize>,
    first_row: usize,
) -> Result<()> {
    for r in rows {
        let y = targets[r];
        if mask[r] != 0.0 && y < vocab && !kept.keeps(r, y) {
            return Err(Error::InvalidInput {
                tensor: RowInput::Targets,
                row: first_row + r,
                value: y as f32,
            });
        }
    }
    Ok(())
}
