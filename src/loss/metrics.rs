//! The loss and the metrics of docs/MATH.md#metrics as read back from the device, and
//! their check.

use crate::error::{Error, Result, RowInput};
use crate::kernels::reduce::METRICS;

/// The loss and the metrics of docs/MATH.md#metrics, as read back from the device
/// ([`Metrics::from_slice`] of the [`LossOutputs::metrics`](crate::LossOutputs::metrics)
/// buffer). The means are masked means over the masked-in tokens, `Σ m·x / Σ m`. Reading
/// them is the device path's validation: call [`Metrics::check`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// The batch loss (docs/MATH.md#aggregation-and-presets); exactly 0 when no row is
    /// masked in, NaN when a row it reads is bad.
    pub loss: f32,
    /// The share of tokens where the clipped term is taken (its meaning per mode in
    /// docs/MATH.md#metrics); 0 for modes that do not clip.
    pub pg_clipfrac: f32,
    /// The share of tokens where the dual clip (or TRL's `δ`) binds, per mode as
    /// docs/MATH.md#metrics says.
    pub pg_clipfrac_lower: f32,
    /// `mean(old_logp − logp)` (0 without old log-probs).
    pub ppo_kl: f32,
    /// `mean(kl_t)` of the KL term's estimator (of `kl'_t` when bias-corrected), reported
    /// whenever reference log-probs are given; 0 without them.
    pub kl: f32,
    /// `mean(H_t)`, the entropy of the (tempered, kept) distribution.
    pub entropy_mean: f32,
    /// Masked-in rows whose logits hold NaN or ±inf (their loss terms are NaN).
    pub nonfinite_rows: f32,
    /// Σ mask.
    pub mask_sum: f32,
    /// The first masked-in row whose token id is outside the vocabulary, and that id.
    pub invalid_target: Option<(u32, u32)>,
    /// Share of masked-in tokens that `clip_cov` / `kl_cov` selected.
    pub cov_selected_frac: f32,
    /// Share of masked-in tokens the top-entropy mask kept (1 without it).
    pub entropy_mask_frac: f32,
    /// The mean rollout-correction weight `q` over masked-in tokens
    /// (docs/MATH.md#rollout-correction); this and the other `rollout_*` metrics are 0
    /// without the correction.
    pub rollout_is_mean: f32,
    /// The smallest weight `q` of a masked-in token.
    pub rollout_is_min: f32,
    /// The largest weight `q` of a masked-in token.
    pub rollout_is_max: f32,
    /// The share of masked-in tokens whose weight was truncated or masked.
    pub rollout_is_clipfrac: f32,
    /// The largest `|δ_t| = |old_logp_t − rollout_logp_t|` of a masked-in token.
    pub rollout_logp_diff_max: f32,
    /// Rows whose other per-row inputs the loss cannot use (docs/MATH.md#bad-input): a
    /// mask that is negative, NaN or ±inf on any row, or a NaN or ±inf advantage, old,
    /// ref or rollout log-prob on a masked-in row that the call reads. Their loss terms
    /// and gradients are NaN where the value is NaN (or the mask bad); ±inf log-probs
    /// keep the formulas' clamps.
    pub invalid_input_rows: f32,
    /// The first of those rows: which input, the row, and the value there.
    pub invalid_input: Option<InvalidInput>,
    /// Share of masked-in tokens the off-policy sequence mask kept (1 without it).
    pub off_policy_mask_frac: f32,
    /// VESPO's mean φ: over the batch's sequences with per-sequence advantages, the
    /// masked token mean with per-token ones (0 in other modes).
    pub vespo_phi_seq_mean: f32,
}

/// The first row of a call whose per-row input is bad (see [`Metrics::invalid_input`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InvalidInput {
    /// Which input holds the bad value.
    pub tensor: RowInput,
    /// Counted over every part's rows in order.
    pub row: u32,
    /// The value there (for [`RowInput::Targets`], the id as an f32).
    pub value: f32,
}

impl Metrics {
    /// Number of f32 values in the device metrics buffer.
    pub const LEN: usize = METRICS as usize;

    /// The metrics of a read-back metrics buffer, slot by slot as the reduce kernel
    /// writes them. A slice shorter than [`Metrics::LEN`] is a buffer read back in part:
    /// of its missing values, those of the first eight slots (the loss to the mask's
    /// sum) read as NaN, never a plausible number, the later ones as 0, and no bad row
    /// is named.
    pub fn from_slice(v: &[f32]) -> Self {
        use crate::shader::abi::reduce::*;
        let at = |slot: u32| v.get(slot as usize).copied();
        let get = |slot: u32| at(slot).unwrap_or(0.0);
        let first = |slot: u32| at(slot).unwrap_or(f32::NAN);
        let bad_target = at(M_INVALID_TARGET_ROW).map_or(u32::MAX, f32::to_bits);
        Metrics {
            loss: first(M_LOSS),
            pg_clipfrac: first(M_PG_CLIPFRAC),
            pg_clipfrac_lower: first(M_PG_CLIPFRAC_LOWER),
            ppo_kl: first(M_PPO_KL),
            kl: first(M_KL),
            entropy_mean: first(M_ENTROPY_MEAN),
            nonfinite_rows: first(M_NONFINITE_ROWS),
            mask_sum: first(M_MASK_SUM),
            invalid_target: match bad_target {
                u32::MAX => None,
                row => Some((row, at(M_INVALID_TARGET_ID).map_or(u32::MAX, f32::to_bits))),
            },
            cov_selected_frac: get(M_COV_SELECTED_FRAC),
            entropy_mask_frac: get(M_ENTROPY_MASK_FRAC),
            rollout_is_mean: get(M_ROLLOUT_IS_MEAN),
            rollout_is_min: get(M_ROLLOUT_IS_MIN),
            rollout_is_max: get(M_ROLLOUT_IS_MAX),
            rollout_is_clipfrac: get(M_ROLLOUT_IS_CLIPFRAC),
            rollout_logp_diff_max: get(M_ROLLOUT_LOGP_DIFF_MAX),
            invalid_input_rows: get(M_INVALID_INPUT_ROWS),
            off_policy_mask_frac: get(M_OFF_POLICY_MASK_FRAC),
            vespo_phi_seq_mean: get(M_VESPO_PHI_SEQ_MEAN),
            invalid_input: at(M_INVALID_INPUT_ROW).and_then(|row| {
                let tensor = RowInput::from_code(at(M_INVALID_INPUT_TENSOR)?.to_bits())?;
                Some(InvalidInput {
                    tensor,
                    row: row.to_bits(),
                    value: at(M_INVALID_INPUT_VALUE).unwrap_or(f32::NAN),
                })
            }),
        }
    }

    /// `Err` naming the first bad row: of a bad per-row input (the error the host API
    /// gives for the same input, [`Error::InvalidInput`]), else of a masked-in token id
    /// outside `[0, vocab)`. The loss is then NaN, and so is that row's gradient (a ±inf
    /// log-prob keeps the formulas' clamps, and only the error says it was bad).
    pub fn check(&self, vocab: u32) -> Result<()> {
        if let Some(b) = self.invalid_input {
            return Err(Error::InvalidInput {
                tensor: b.tensor,
                row: b.row as usize,
                value: b.value,
            });
        }
        match self.invalid_target {
            Some((row, id)) => Err(Error::TargetOutOfRange {
                row: row as usize,
                id: id as i64,
                vocab,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn a_short_slice_reads_as_missing_not_as_a_panic() {
        for n in [0, 3, 9, Metrics::LEN - 1] {
            let m = Metrics::from_slice(&vec![0.5; n]);
            assert_eq!(m.loss.is_nan(), n == 0, "{n} values");
            assert!(n > 7 || m.mask_sum.is_nan(), "{n} values");
            assert!(m.invalid_input.is_none(), "{n} values");
        }
    }
}
