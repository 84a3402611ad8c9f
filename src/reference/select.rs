//! The batch-wide choices: the rollout correction's weights, the top-entropy mask and
//! the covariance selection (docs/MATH.md, "Covariance token selection", "Rollout
//! correction", "The top-entropy token mask"). The per-sequence quantities (GSPO's
//! ratio among them) are in `sequence`.

use super::batch::Batch;
use super::terms::{clipped_term, ratio};
use super::RowStats;
use crate::config::{LossConfig, PolicyLossMode, RolloutLevel, RolloutMode};

/// The order-preserving key of an f32 as a u32 (the radix select's): larger values,
/// larger keys; NaN largest.
pub(super) fn order_key(v: f32) -> u32 {
    if v.is_nan() {
        return u32::MAX;
    }
    let u = v.to_bits();
    if u >> 31 == 1 {
        !u
    } else {
        u | 0x8000_0000
    }
}

/// `clip_cov`'s priority of row `r` (docs/MATH.md#covariance-token-selection).
pub fn clip_cov_priority(r: u32, seed: u32) -> u32 {
    let mut x = r.wrapping_add(seed.wrapping_mul(0x9E37_79B9));
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// How many of `n` tokens a share `ratio` takes, `⌊n·ratio⌋` or `⌈n·ratio⌉`, computed
/// in f32 as the kernels do (so that a product landing on an integer agrees).
pub(super) fn share_of(n: usize, ratio: f32, ceil: bool) -> usize {
    let x = n as f32 * ratio;
    (if ceil { x.ceil() } else { x.floor() }) as usize
}

/// The rows of `candidates` with the `k` smallest keys, ties to the lower row.
pub(super) fn smallest_k(candidates: &[(u64, usize)], k: usize) -> Vec<usize> {
    let mut sorted = candidates.to_vec();
    sorted.sort_by_key(|&(key, row)| (key, row));
    sorted.iter().take(k).map(|&(_, r)| r).collect()
}

/// The `cov_t = (A_t − mean A)·(logp_t − mean logp)` of
/// docs/MATH.md#covariance-token-selection, of `clip_cov` / `kl_cov`, the means over
/// the rows `masked_in`; one per row (0 on the other rows). The means are taken about
/// the first of those rows, as the kernel does: where every advantage (or every
/// log-prob) agrees, the deviations are exactly 0 (Σ/N of nine equal f64 values need
/// not be that value), and every covariance ties.
pub fn covariances(b: &Batch<'_>, logp: &[f64], masked_in: &[usize]) -> Vec<f64> {
    let mut cov = vec![0.0; b.rows()];
    let Some(&first) = masked_in.first() else {
        return cov;
    };
    let finite_or_0 = |x: f64| if x.is_finite() { x } else { 0.0 };
    let (pa, pl) = (finite_or_0(b.advantage(first)), finite_or_0(logp[first]));
    let n = masked_in.len() as f64;
    let mean_a = pa + masked_in.iter().map(|&r| b.advantage(r) - pa).sum::<f64>() / n;
    let mean_logp = pl + masked_in.iter().map(|&r| logp[r] - pl).sum::<f64>() / n;
    for &r in masked_in {
        cov[r] = (b.advantage(r) - mean_a) * (logp[r] - mean_logp);
    }
    cov
}

/// The `(1 − ρ_H)` quantile, with linear interpolation (as `torch.quantile`), of
/// `values`: the position `(1 − ρ_H)·(N − 1)` is computed in f32 as the kernels do.
pub fn entropy_threshold(values: &[f64], rho: f32) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::INFINITY;
    }
    let pos = (1.0f32 - rho) * (n - 1) as f32;
    let lo = (pos.floor() as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let frac = (pos - lo as f32) as f64;
    v[lo] + frac * (v[hi] - v[lo])
}

/// The rollout correction of every row: its weight `q` (1 without it), whether it was
/// truncated or masked, and `δ`.
pub(super) struct RolloutWeights {
    pub q: Vec<f64>,
    pub cut: Vec<bool>,
    pub delta: Vec<f64>,
}

pub(super) fn rollout_weights(
    cfg: &LossConfig,
    b: &Batch<'_>,
    stats: &[RowStats],
    masked_in: &[usize],
    rollout_logp: Option<&[f64]>,
) -> RolloutWeights {
    let (rows, seqs) = (b.rows(), b.seqs());
    let mut w = RolloutWeights {
        q: vec![1.0; rows],
        cut: vec![false; rows],
        delta: vec![0.0; rows],
    };
    let (Some(rc), Some(roll)) = (cfg.rollout_correction, rollout_logp) else {
        return w;
    };
    let (mut sum, mut den) = (vec![0.0f64; seqs], vec![0.0f64; seqs]);
    for &r in masked_in {
        let own = b.old_logp.map_or(stats[r].logp, |old| old[r]);
        w.delta[r] = own - roll[r];
        sum[b.seq_of(r)] += b.mask[r] * w.delta[r];
        den[b.seq_of(r)] += b.mask[r];
    }
    let (lo, hi) = (rc.lower() as f64, rc.threshold as f64);
    for &r in masked_in {
        let s = b.seq_of(r);
        let log_rho = match rc.level {
            RolloutLevel::Token => w.delta[r],
            RolloutLevel::Sequence => sum[s],
            RolloutLevel::Geometric if den[s] > 0.0 => sum[s] / den[s],
            RolloutLevel::Geometric => 0.0,
        };
        let rho = log_rho.clamp(-20.0, 20.0).exp();
        w.cut[r] = rho < lo || rho > hi;
        w.q[r] = match rc.mode {
            RolloutMode::Truncate => rho.clamp(lo, hi),
            RolloutMode::Mask if w.cut[r] => 0.0,
            RolloutMode::Mask => rho,
        };
    }
    w
}

/// The rows the top-entropy mask keeps (every masked-in row without it).
pub(super) fn entropy_kept(cfg: &LossConfig, stats: &[RowStats], masked_in: &[usize]) -> Vec<bool> {
    let mut kept = vec![false; stats.len()];
    let Some(rho) = cfg.top_entropy_quantile else {
        masked_in.iter().for_each(|&r| kept[r] = true);
        return kept;
    };
    if cfg.top_entropy_renormalize {
        // the ⌈ρ·N⌉ highest entropies, ties to the lower row
        let k = share_of(masked_in.len(), rho, true);
        let cands: Vec<(u64, usize)> = masked_in
            .iter()
            .map(|&r| (!order_key(stats[r].entropy as f32) as u64, r))
            .collect();
        smallest_k(&cands, k)
            .into_iter()
            .for_each(|r| kept[r] = true);
    } else {
        let h: Vec<f64> = masked_in.iter().map(|&r| stats[r].entropy).collect();
        let theta = entropy_threshold(&h, rho);
        masked_in
            .iter()
            .for_each(|&r| kept[r] = stats[r].entropy >= theta);
    }
    kept
}

/// The rows `clip_cov` or `kl_cov` selects (none in the other modes).
pub(super) fn cov_selected(
    cfg: &LossConfig,
    b: &Batch<'_>,
    stats: &[RowStats],
    masked_in: &[usize],
) -> Vec<bool> {
    let mut selected = vec![false; b.rows()];
    let n_in = masked_in.len();
    if !cfg.mode.selects_tokens() || n_in == 0 {
        return selected;
    }
    let logp: Vec<f64> = stats.iter().map(|s| s.logp).collect();
    let cov = covariances(b, &logp, masked_in);
    let (k, cands): (usize, Vec<(u64, usize)>) = if cfg.mode == PolicyLossMode::KlCov {
        // largest cov first: the key of −cov's order, NaN last (−0 and +0 tie, as the
        // kernels' key does)
        let key = |c: f32| {
            if c.is_nan() {
                u32::MAX
            } else {
                !order_key(c + 0.0)
            }
        };
        let cands = masked_in.iter().map(|&r| (key(cov[r] as f32) as u64, r));
        (share_of(n_in, cfg.kl_cov_ratio, false), cands.collect())
    } else {
        let (lb, ub) = (cfg.clip_cov_lb as f64, cfg.clip_cov_ub as f64);
        let undual = LossConfig {
            clip_ratio_c: None,
            ..*cfg
        };
        let eligible = |r: usize| {
            let term = clipped_term(&undual, b.advantage(r), ratio(b, stats, r).0);
            !term.clipped && lb < cov[r] && cov[r] < ub
        };
        let cands = masked_in.iter().copied().filter(|&r| eligible(r));
        let cands = cands.map(|r| (clip_cov_priority(r as u32, cfg.seed) as u64, r));
        (share_of(n_in, cfg.clip_cov_ratio, false), cands.collect())
    };
    for r in smallest_k(&cands, k.max(1)) {
        selected[r] = true;
    }
    selected
}
