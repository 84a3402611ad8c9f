//! The f64 CPU reference of docs/MATH.md, written for clarity rather than speed. It
//! depends on nothing GPU-related, so users can check the kernels (and their own code)
//! against it. One step of the math per function: the row statistics here, the batch
//! and its weights in `batch`, the per-token terms in `terms`, the batch-wide choices
//! in `select`, the per-sequence quantities of the 2026 modes and options in
//! `sequence`, the loss and its gradient in `loss`, the advantages in `advantages`;
//! `compare` holds a computed gradient to the reference by one rule; `sampler` is one
//! row under the sampler's distribution (softcap, per-token temperature, kept sets) and
//! the log-prob primitive's vector-Jacobian product.

mod advantages;
mod batch;
pub mod compare;
mod head;
mod loss;
pub mod sampler;
mod select;
mod sequence;
mod terms;

pub use advantages::advantages;
pub use batch::{invalid_input, mask_bad, mask_in, row_weights, Batch, LossOutput, Metrics};
pub use head::{head_grads, head_logits, head_magnitudes};
pub use loss::{policy_loss, policy_loss_sampled, policy_loss_with};
pub use select::{clip_cov_priority, covariances, entropy_threshold};
pub use terms::{clipped_term, kl_term, PolicyTerm};

/// Per-row statistics of `z = x / τ`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowStats {
    /// log Σ_v exp(z_v)
    pub lse: f64,
    /// z_y − lse
    pub logp: f64,
    /// lse − Σ_v p_v z_v
    pub entropy: f64,
}

/// Statistics of one row of logits `x` with target `y` at temperature `τ`.
///
/// `-inf` entries have probability 0 and contribute nothing to the entropy. A NaN
/// anywhere makes all three NaN. `+inf` entries take all the mass (the limit): lse is
/// `+inf`, a finite target's log-prob `-inf`, the entropy log(number of `+inf`s). A row
/// of only `-inf` has lse `-inf` and NaN log-prob and entropy.
pub fn row_stats(x: &[f64], y: usize, temperature: f64) -> RowStats {
    let z: Vec<f64> = x.iter().map(|&v| v / temperature).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if z.iter().any(|v| v.is_nan()) {
        return RowStats {
            lse: f64::NAN,
            logp: f64::NAN,
            entropy: f64::NAN,
        };
    }
    if m == f64::INFINITY {
        // the limit: all mass on the +inf entries, uniformly; a finite target has
        // log-prob -inf, a +inf one is undefined (inf - inf)
        let count = z.iter().filter(|&&v| v == f64::INFINITY).count() as f64;
        return RowStats {
            lse: f64::INFINITY,
            logp: z.get(y).map_or(f64::NAN, |&zy| zy - f64::INFINITY),
            entropy: count.ln(),
        };
    }
    if m == f64::NEG_INFINITY {
        // every entry -inf: the sum is 0, and p and H are undefined
        return RowStats {
            lse: f64::NEG_INFINITY,
            logp: f64::NAN,
            entropy: f64::NAN,
        };
    }
    // everything relative to the largest z: near f64's range m + ln s rounds to m, and
    // z_y − lse or lse − m would lose ln s
    let s: f64 = z.iter().map(|&v| (v - m).exp()).sum();
    let log_s = s.ln();
    // Σ p (z - m), skipping p = 0 entries (z = -inf)
    let t: f64 = z
        .iter()
        .map(|&v| {
            let p = (v - m).exp() / s;
            if p == 0.0 {
                0.0
            } else {
                p * (v - m)
            }
        })
        .sum();
    RowStats {
        lse: m + log_s,
        logp: z.get(y).map_or(f64::NAN, |&zy| (zy - m) - log_s),
        entropy: log_s - t,
    }
}

/// The probabilities `p_v = e^{z_v} / Σ e^{z}` of a row of logits `x` at temperature `τ`,
/// taken about the largest z (NaN where row_stats's statistics are NaN; a row holding
/// +inf has NaN there, as e^{z − lse} does).
pub fn softmax(x: &[f64], temperature: f64) -> Vec<f64> {
    let z: Vec<f64> = x.iter().map(|&v| v / temperature).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if z.iter().any(|v| v.is_nan()) || m == f64::NEG_INFINITY {
        return vec![f64::NAN; z.len()];
    }
    if m == f64::INFINITY {
        // e^{z − lse} with lse = +inf: NaN at the +inf entries, 0 elsewhere
        return z
            .iter()
            .map(|&v| if v == f64::INFINITY { f64::NAN } else { 0.0 })
            .collect();
    }
    let e: Vec<f64> = z.iter().map(|&v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&e| e / s).collect()
}

/// [`row_stats`] for every row of `x` (`rows × vocab`, row-major), any float type.
pub fn row_stats_batch<T: Copy + Into<f64>>(
    x: &[T],
    vocab: usize,
    targets: &[u32],
    temperature: f64,
) -> Vec<RowStats> {
    x.chunks(vocab)
        .zip(targets)
        .map(|(row, &y)| {
            let row: Vec<f64> = row.iter().map(|&v| v.into()).collect();
            row_stats(&row, y as usize, temperature)
        })
        .collect()
}
