//! A batch on the host, its metrics and outputs, the mask's rules and the aggregation
//! weights (docs/MATH.md, "Aggregation and presets" and "Bad input").

use crate::config::{LossAggMode, LossConfig};

/// One batch for [`policy_loss`](crate::reference::policy_loss), all on the host in f64. Rows are grouped into
/// sequences of `rows_per_seq` consecutive rows (the last may be shorter).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// `rows × vocab`, row-major.
    pub logits: &'a [f64],
    /// The vocabulary size `V`, the logits' row length.
    pub vocab: usize,
    /// S; `rows` (or more) for a single sequence.
    pub rows_per_seq: usize,
    /// One id per row; read only where the mask is > 0.
    pub targets: &'a [u32],
    /// One weight per row (0 or 1; other values ≥ 0 weight linearly).
    pub mask: &'a [f64],
    /// One per sequence, or one per row.
    pub advantages: &'a [f64],
    /// The behaviour policy's log-prob of each row; `None`: on-policy.
    pub old_logp: Option<&'a [f64]>,
    /// The reference policy's log-prob of each row, for the KL term.
    pub ref_logp: Option<&'a [f64]>,
}

impl Batch<'_> {
    /// The number of rows `T` (the targets' length).
    pub fn rows(&self) -> usize {
        self.targets.len()
    }
    /// The number of sequences `B`, the last possibly shorter.
    pub fn seqs(&self) -> usize {
        self.rows().div_ceil(self.rows_per_seq.max(1))
    }
    pub(crate) fn seq_of(&self, r: usize) -> usize {
        r / self.rows_per_seq.max(1)
    }
    /// The advantage of row `r`: its own, or its sequence's.
    pub fn advantage(&self, r: usize) -> f64 {
        if self.advantages.len() == self.rows() {
            self.advantages[r]
        } else {
            self.advantages[self.seq_of(r)]
        }
    }
}

/// The metrics of docs/MATH.md#metrics in f64: masked means over tokens, and the count
/// of masked-in rows whose logits are not finite. The device's [`crate::Metrics`] holds
/// the same names.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// The share of tokens where the clipped term is taken (per mode).
    pub pg_clipfrac: f64,
    /// The share of tokens where the dual clip (or `δ`) binds (per mode).
    pub pg_clipfrac_lower: f64,
    /// `mean(old_logp − logp)`.
    pub ppo_kl: f64,
    /// `mean(kl_t)` (of `kl'_t` when bias-corrected).
    pub kl: f64,
    /// `mean(H_t)`.
    pub entropy_mean: f64,
    /// Masked-in rows whose logits hold NaN or ±inf.
    pub nonfinite_rows: f64,
    /// Share of masked-in tokens `clip_cov` / `kl_cov` selected.
    pub cov_selected_frac: f64,
    /// Share of masked-in tokens the top-entropy mask keeps.
    pub entropy_mask_frac: f64,
    /// The mean rollout-correction weight `q` over masked-in tokens
    /// (docs/MATH.md#rollout-correction).
    pub rollout_is_mean: f64,
    /// The smallest weight.
    pub rollout_is_min: f64,
    /// The largest weight.
    pub rollout_is_max: f64,
    /// The share of masked-in tokens whose weight was truncated or masked.
    pub rollout_is_clipfrac: f64,
    /// The largest `|old_logp − rollout_logp|`.
    pub rollout_logp_diff_max: f64,
    /// Rows with a bad per-row input ([`invalid_input`]), and the first of them.
    pub invalid_input_rows: f64,
    /// The first row with a bad per-row input: which input, and the row.
    pub first_invalid_input: Option<(crate::RowInput, usize)>,
    /// Share of masked-in tokens the off-policy sequence mask keeps (1 without it).
    pub off_policy_mask_frac: f64,
    /// VESPO's mean φ (docs/MATH.md#policy-modes-of-2026); 0 in other modes.
    pub vespo_phi_seq_mean: f64,
}

/// Everything [`policy_loss`](crate::reference::policy_loss) computes.
#[derive(Clone, Debug, Default)]
pub struct LossOutput {
    /// The batch loss (docs/MATH.md#aggregation-and-presets).
    pub loss: f64,
    /// Per row (every row, masked or not; NaN where a masked-out id is out of range).
    pub logp: Vec<f64>,
    /// The entropy `H` of every row.
    pub entropy: Vec<f64>,
    /// log Σ_v e^{z_v}, z = x/τ (the `lse` of docs/MATH.md#row-statistics).
    pub lse: Vec<f64>,
    /// ∂loss/∂logits, `rows × vocab`.
    pub grad: Vec<f64>,
    /// The metrics.
    pub metrics: Metrics,
    /// Per row: selected by `clip_cov` / `kl_cov`
    /// (docs/MATH.md#covariance-token-selection).
    pub selected: Vec<bool>,
    /// Per row: kept by the top-entropy mask, `e = 1`
    /// (docs/MATH.md#the-top-entropy-token-mask).
    pub kept: Vec<bool>,
    /// Per row: the rollout correction's weight `q` (1 without it; per token even where
    /// `geo_mean` weighs by their geometric mean `q_b` and `vespo` folds them into φ).
    pub rollout_weight: Vec<f64>,
    /// Per row: the off-policy sequence mask `o` (1 without it and on masked-out rows;
    /// NaN where its sequence's `κ̄_b` is NaN).
    pub off_policy_kept: Vec<f64>,
    /// Per row, the gradient's coefficient `G/τ`: the target's `1 − p` and every `−p_v`
    /// are scaled by it; 0 on rows without a gradient. What the comparison's bound reads
    /// ([`compare`](crate::reference::compare)), with `entropy_slope`.
    pub slope: Vec<f64>,
    /// Per row, the gradient's coefficient `w·γ/τ` of the entropy's `p_v·(z_v − μ)`; 0
    /// on rows without a gradient.
    pub entropy_slope: Vec<f64>,
}

/// Whether a mask value puts its row in the loss: finite and > 0
/// (docs/MATH.md#bad-input: a negative, NaN or ±inf mask is bad input, outside every
/// sum but the loss's).
pub fn mask_in(m: f64) -> bool {
    m.is_finite() && m > 0.0
}

/// A mask value that is bad input on any row.
pub fn mask_bad(m: f64) -> bool {
    !m.is_finite() || m < 0.0
}

/// The sequence weight `w_r / m_r` of every row (docs/MATH.md#aggregation-and-presets).
pub fn row_weights(cfg: &LossConfig, b: &Batch<'_>) -> Vec<f64> {
    weights_for(cfg, b, b.mask)
}

/// [`row_weights`] with `mask` in place of the batch's (the entropy mask's
/// renormalised weights use `m·e`).
pub(super) fn weights_for(cfg: &LossConfig, b: &Batch<'_>, mask: &[f64]) -> Vec<f64> {
    let seqs = b.seqs();
    let mut n = vec![0.0f64; seqs];
    for r in 0..b.rows() {
        if mask_in(mask[r]) {
            n[b.seq_of(r)] += mask[r];
        }
    }
    let total: f64 = n.iter().sum();
    let nonempty = if cfg.count_empty_sequences {
        seqs as f64
    } else {
        n.iter().filter(|&&x| x > 0.0).count() as f64
    };
    let s = b.rows_per_seq.min(b.rows()).max(1) as f64;
    let inv = |d: f64| if d > 0.0 { 1.0 / d } else { 0.0 };
    (0..b.rows())
        .map(|r| match cfg.loss_agg_mode {
            LossAggMode::TokenMean => inv(cfg.global_normalizer.map_or(total, |g| g as f64)),
            LossAggMode::SeqMeanTokenMean => inv(n[b.seq_of(r)] * nonempty),
            LossAggMode::SeqMeanTokenSum => inv(nonempty),
            LossAggMode::SeqMeanTokenSumNorm => {
                inv(seqs as f64 * cfg.l_norm.map_or(s, |l| l as f64))
            }
            LossAggMode::TokenSum => 1.0,
        })
        .collect()
}

/// docs/MATH.md#bad-input: the input of row `r` the loss cannot use, and its value: a
/// mask that is negative, NaN or ±inf, or on a masked-in row a non-finite advantage,
/// old, ref or rollout log-prob (`rollout_logp` where the call reads it), in that
/// order.
pub fn invalid_input(
    b: &Batch<'_>,
    rollout_logp: Option<&[f64]>,
    r: usize,
) -> Option<(crate::RowInput, f64)> {
    use crate::RowInput as I;
    if mask_bad(b.mask[r]) {
        return Some((I::Mask, b.mask[r]));
    }
    if !mask_in(b.mask[r]) {
        return None;
    }
    [
        (I::Advantages, Some(b.advantage(r))),
        (I::OldLogprobs, b.old_logp.map(|x| x[r])),
        (I::RefLogprobs, b.ref_logp.map(|x| x[r])),
        (I::RolloutLogprobs, rollout_logp.map(|x| x[r])),
    ]
    .into_iter()
    .find_map(|(i, v)| v.filter(|v| !v.is_finite()).map(|v| (i, v)))
}
