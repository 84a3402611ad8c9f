//! The f64 CPU reference of `SPEC.md`, written for clarity rather than speed. It
//! depends on nothing GPU-related, so users can check the kernels (and their own
//! code) against it.

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
    let s: f64 = z.iter().map(|&v| (v - m).exp()).sum();
    let lse = m + s.ln();
    // Σ p (z - m), skipping p = 0 entries (z = -inf)
    let t: f64 = z
        .iter()
        .map(|&v| {
            let p = (v - lse).exp();
            if p == 0.0 {
                0.0
            } else {
                p * (v - m)
            }
        })
        .sum();
    RowStats {
        lse,
        logp: z.get(y).map_or(f64::NAN, |&zy| zy - lse),
        entropy: (lse - m) - t,
    }
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

use crate::config::{KlEstimator, LossAggMode, LossConfig, PolicyLossMode};

/// One batch for [`policy_loss`], all on the host in f64. Rows are grouped into
/// sequences of `rows_per_seq` consecutive rows (the last may be shorter).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// `rows × vocab`, row-major.
    pub logits: &'a [f64],
    pub vocab: usize,
    /// S; `rows` (or more) for a single sequence.
    pub rows_per_seq: usize,
    /// One id per row; read only where the mask is > 0.
    pub targets: &'a [u32],
    /// One weight per row (0 or 1; other values ≥ 0 weight linearly).
    pub mask: &'a [f64],
    /// One per sequence, or one per row.
    pub advantages: &'a [f64],
    pub old_logp: Option<&'a [f64]>,
    pub ref_logp: Option<&'a [f64]>,
}

impl Batch<'_> {
    pub fn rows(&self) -> usize {
        self.targets.len()
    }
    pub fn seqs(&self) -> usize {
        self.rows().div_ceil(self.rows_per_seq.max(1))
    }
    fn seq_of(&self, r: usize) -> usize {
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

/// SPEC's metrics: masked means over tokens, and the count of masked-in rows whose
/// logits are not finite.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub pg_clipfrac: f64,
    pub pg_clipfrac_lower: f64,
    pub ppo_kl: f64,
    pub kl: f64,
    pub entropy_mean: f64,
    pub nonfinite_rows: f64,
    /// Share of masked-in tokens `clip_cov` / `kl_cov` selected.
    pub cov_selected_frac: f64,
    /// Share of masked-in tokens the top-entropy mask keeps.
    pub entropy_mask_frac: f64,
    /// Rollout correction weights over masked-in tokens: mean, min, max, the share that
    /// were truncated or masked, and the largest |δ|.
    pub rollout_is_mean: f64,
    pub rollout_is_min: f64,
    pub rollout_is_max: f64,
    pub rollout_is_clipfrac: f64,
    pub rollout_logp_diff_max: f64,
    /// Rows with a bad per-row input ([`invalid_input`]), and the first of them.
    pub invalid_input_rows: f64,
    pub first_invalid_input: Option<(crate::RowInput, usize)>,
}

/// Everything [`policy_loss`] computes.
#[derive(Clone, Debug, Default)]
pub struct LossOutput {
    pub loss: f64,
    /// Per row (every row, masked or not; NaN where a masked-out id is out of range).
    pub logp: Vec<f64>,
    pub entropy: Vec<f64>,
    /// ∂loss/∂logits, `rows × vocab`.
    pub grad: Vec<f64>,
    pub metrics: Metrics,
    /// Per row: selected by `clip_cov` / `kl_cov`, kept by the entropy mask, and the
    /// rollout correction weight `q` (1 without it).
    pub selected: Vec<bool>,
    pub kept: Vec<bool>,
    pub rollout_weight: Vec<f64>,
}

/// The per-token policy term: the loss `l`, `g = ∂l/∂logp`, and whether the clipped
/// term was chosen (`l2 > l1`) or the dual clip was active.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyTerm {
    pub l: f64,
    pub g: f64,
    pub clipped: bool,
    pub dual_clipped: bool,
}

/// SPEC's clipped objective for ratio `r` (`ppo_clip`, and `gspo` with the sequence ratio).
pub fn clipped_term(cfg: &LossConfig, a: f64, r: f64) -> PolicyTerm {
    let lo = 1.0 - cfg.clip_ratio_low as f64;
    let hi = 1.0 + cfg.clip_ratio_high as f64;
    let l1 = -a * r;
    let l2 = -a * r.clamp(lo, hi);
    let clipped = l2 > l1;
    let mut l = l1.max(l2);
    let mut dual = false;
    if let Some(c) = cfg.clip_ratio_c {
        let cap = -a * c as f64;
        if a < 0.0 && l > cap {
            l = cap;
            dual = true;
        }
    }
    let g = if clipped || dual { 0.0 } else { -a * r };
    PolicyTerm {
        l,
        g,
        clipped,
        dual_clipped: dual,
    }
}

/// The KL estimator and its derivative with respect to logp.
pub fn kl_term(est: KlEstimator, logp: f64, ref_logp: f64) -> (f64, f64) {
    let delta = ref_logp - logp;
    match est {
        KlEstimator::K1 => (logp - ref_logp, 1.0),
        KlEstimator::K2 => (0.5 * delta * delta, logp - ref_logp),
        KlEstimator::K3 => {
            // (f64::clamp keeps a NaN; a NaN is no active clamp, it stays NaN)
            let d = delta.clamp(-20.0, 20.0);
            let kl = d.exp() - d - 1.0;
            let klc = kl.clamp(-10.0, 10.0);
            let active = delta.abs() > 20.0 || kl.abs() > 10.0;
            (klc, if active { 0.0 } else { 1.0 - delta.exp() })
        }
    }
}

/// Whether a mask value puts its row in the loss: finite and > 0 (SPEC "Bad input": a
/// negative, NaN or ±inf mask is bad input, outside every sum but the loss's).
pub fn mask_in(m: f64) -> bool {
    m.is_finite() && m > 0.0
}

/// A mask value that is bad input on any row.
pub fn mask_bad(m: f64) -> bool {
    !m.is_finite() || m < 0.0
}

/// The sequence weight `w_r / m_r` of every row (SPEC "Aggregation").
pub fn row_weights(cfg: &LossConfig, b: &Batch<'_>) -> Vec<f64> {
    weights_for(cfg, b, b.mask)
}

/// [`row_weights`] with `mask` in place of the batch's (the entropy mask's
/// renormalised weights use `m·e`).
fn weights_for(cfg: &LossConfig, b: &Batch<'_>, mask: &[f64]) -> Vec<f64> {
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
        })
        .collect()
}

/// SPEC "Bad input": the input of row `r` the loss cannot use, and its value: a mask
/// that is negative, NaN or ±inf, or on a masked-in row a non-finite advantage, old,
/// ref or rollout log-prob (`rollout_logp` where the call reads it), in that order.
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

/// SPEC's loss, gradient and metrics, in f64.
pub fn policy_loss(cfg: &LossConfig, b: &Batch<'_>) -> crate::Result<LossOutput> {
    policy_loss_with(cfg, b, None)
}

/// The order-preserving key of an f32 as a u32 (the radix select's): larger values,
/// larger keys; NaN largest.
fn order_key(v: f32) -> u32 {
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

/// `clip_cov`'s priority of row `r` (SPEC "Token selection").
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
fn share_of(n: usize, ratio: f32, ceil: bool) -> usize {
    let x = n as f32 * ratio;
    (if ceil { x.ceil() } else { x.floor() }) as usize
}

/// The rows of `candidates` with the `k` smallest keys, ties to the lower row.
fn smallest_k(candidates: &[(u64, usize)], k: usize) -> Vec<usize> {
    let mut sorted = candidates.to_vec();
    sorted.sort_by_key(|&(key, row)| (key, row));
    sorted.iter().take(k).map(|&(_, r)| r).collect()
}

/// SPEC's `cov_t = (A_t − mean A)·(logp_t − mean logp)` of `clip_cov` / `kl_cov`, the
/// means over the rows `masked_in`; one per row (0 on the other rows). The means are
/// taken about the first of those rows, as the kernel does: where every advantage (or
/// every log-prob) agrees, the deviations are exactly 0 (Σ/N of nine equal f64 values
/// need not be that value), and every covariance ties.
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

/// [`policy_loss`] with the sampler's log-probs (`rollout_logp`, one per row) for the
/// rollout correction.
pub fn policy_loss_with(
    cfg: &LossConfig,
    b: &Batch<'_>,
    rollout_logp: Option<&[f64]>,
) -> crate::Result<LossOutput> {
    use crate::Error;
    cfg.validate()?;
    let (rows, v) = (b.rows(), b.vocab);
    if b.logits.len() != rows * v {
        return Err(Error::arg("logits", "length is not rows × vocab"));
    }
    for (arg, len) in [("mask", b.mask.len())]
        .into_iter()
        .chain(b.old_logp.map(|x| ("old_logprobs", x.len())))
        .chain(b.ref_logp.map(|x| ("ref_logprobs", x.len())))
        .chain(rollout_logp.map(|x| ("rollout_logprobs", x.len())))
    {
        if len != rows {
            return Err(Error::arg(arg, format!("has {len} values for {rows} rows")));
        }
    }
    if b.advantages.len() != rows && b.advantages.len() != b.seqs() {
        return Err(Error::arg(
            "advantages",
            "needs one value per sequence or per row",
        ));
    }
    if cfg.kl_coef != 0.0 && b.ref_logp.is_none() {
        return Err(Error::arg("ref_logprobs", "required when kl_coef is not 0"));
    }
    if cfg.rollout_correction.is_some() && rollout_logp.is_none() {
        return Err(Error::arg(
            "rollout_logprobs",
            "required by the rollout correction",
        ));
    }
    for r in 0..rows {
        if mask_in(b.mask[r]) && b.targets[r] as usize >= v {
            return Err(Error::TargetOutOfRange {
                row: r,
                id: b.targets[r] as i64,
                vocab: v as u32,
            });
        }
    }
    let tau = cfg.temperature as f64;
    let stats: Vec<RowStats> = (0..rows)
        .map(|r| row_stats(&b.logits[r * v..(r + 1) * v], b.targets[r] as usize, tau))
        .collect();
    let seqs = b.seqs();
    let inside: Vec<bool> = b.mask.iter().map(|&m| mask_in(m)).collect();
    let masked_in: Vec<usize> = (0..rows).filter(|&r| inside[r]).collect();
    let n_in = masked_in.len();

    // the PPO ratio, and whether its ±20 clamp is active
    let ratio = |r: usize| -> (f64, bool) {
        match b.old_logp {
            Some(old) => {
                let d = stats[r].logp - old[r];
                (d.clamp(-20.0, 20.0).exp(), d.abs() > 20.0)
            }
            None => (1.0, false),
        }
    };

    // GSPO: one ratio per sequence, from the masked mean log-ratio
    let mut seq_ratio = vec![1.0f64; seqs];
    if let (PolicyLossMode::Gspo, Some(old)) = (cfg.mode, b.old_logp) {
        let mut num = vec![0.0f64; seqs];
        let mut den = vec![0.0f64; seqs];
        for &r in &masked_in {
            num[b.seq_of(r)] += b.mask[r] * (stats[r].logp - old[r]);
            den[b.seq_of(r)] += b.mask[r];
        }
        for s in 0..seqs {
            let mean = if den[s] > 0.0 { num[s] / den[s] } else { 0.0 };
            seq_ratio[s] = mean.clamp(-20.0, 20.0).exp();
        }
    }

    // rollout correction: q per row, whether it was truncated or masked, and |δ|
    let mut q = vec![1.0f64; rows];
    let mut q_cut = vec![false; rows];
    let mut delta = vec![0.0f64; rows];
    if let (Some(rc), Some(roll)) = (cfg.rollout_correction, rollout_logp) {
        for &r in &masked_in {
            let own = b.old_logp.map_or(stats[r].logp, |old| old[r]);
            delta[r] = own - roll[r];
        }
        let mut sum = vec![0.0f64; seqs];
        let mut den = vec![0.0f64; seqs];
        for &r in &masked_in {
            sum[b.seq_of(r)] += b.mask[r] * delta[r];
            den[b.seq_of(r)] += b.mask[r];
        }
        let (lo, hi) = (rc.lower() as f64, rc.threshold as f64);
        for &r in &masked_in {
            let s = b.seq_of(r);
            let log_rho = match rc.level {
                crate::config::RolloutLevel::Token => delta[r],
                crate::config::RolloutLevel::Sequence => sum[s],
                crate::config::RolloutLevel::Geometric => {
                    if den[s] > 0.0 {
                        sum[s] / den[s]
                    } else {
                        0.0
                    }
                }
            };
            let rho = log_rho.clamp(-20.0, 20.0).exp();
            q_cut[r] = rho < lo || rho > hi;
            q[r] = match rc.mode {
                crate::config::RolloutMode::Truncate => rho.clamp(lo, hi),
                crate::config::RolloutMode::Mask => {
                    if q_cut[r] {
                        0.0
                    } else {
                        rho
                    }
                }
            };
        }
    }

    // the top-entropy mask
    let mut kept = vec![false; rows];
    if let Some(rho) = cfg.top_entropy_quantile {
        if cfg.top_entropy_renormalize {
            // the ⌈ρ·N⌉ highest entropies, ties to the lower row
            let k = share_of(n_in, rho, true);
            let cands: Vec<(u64, usize)> = masked_in
                .iter()
                .map(|&r| (!order_key(stats[r].entropy as f32) as u64, r))
                .collect();
            for r in smallest_k(&cands, k) {
                kept[r] = true;
            }
        } else {
            let h: Vec<f64> = masked_in.iter().map(|&r| stats[r].entropy).collect();
            let theta = entropy_threshold(&h, rho);
            for &r in &masked_in {
                kept[r] = stats[r].entropy >= theta;
            }
        }
    } else {
        for &r in &masked_in {
            kept[r] = true;
        }
    }

    // covariance selection of clip_cov and kl_cov
    let mut selected = vec![false; rows];
    if cfg.mode.selects_tokens() && n_in > 0 {
        let logp: Vec<f64> = stats.iter().map(|s| s.logp).collect();
        let covs = covariances(b, &logp, &masked_in);
        let cov = |r: usize| covs[r];
        if cfg.mode == PolicyLossMode::KlCov {
            let k = share_of(n_in, cfg.kl_cov_ratio, false).max(1);
            // largest cov first: the key of −cov's order, NaN last
            let cands: Vec<(u64, usize)> = masked_in
                .iter()
                .map(|&r| {
                    // −0 and +0 tie (the kernels' key too)
                    let c = cov(r) as f32 + 0.0;
                    let key = if c.is_nan() { u32::MAX } else { !order_key(c) };
                    (key as u64, r)
                })
                .collect();
            for r in smallest_k(&cands, k) {
                selected[r] = true;
            }
        } else {
            let k = share_of(n_in, cfg.clip_cov_ratio, false).max(1);
            let (lb, ub) = (cfg.clip_cov_lb as f64, cfg.clip_cov_ub as f64);
            let cands: Vec<(u64, usize)> = masked_in
                .iter()
                .filter(|&&r| {
                    let c = cov(r);
                    let term = clipped_term(
                        &LossConfig {
                            clip_ratio_c: None,
                            ..*cfg
                        },
                        b.advantage(r),
                        ratio(r).0,
                    );
                    !term.clipped && lb < c && c < ub
                })
                .map(|&r| (clip_cov_priority(r as u32, cfg.seed) as u64, r))
                .collect();
            for r in smallest_k(&cands, k) {
                selected[r] = true;
            }
        }
    }

    let weights = row_weights(cfg, b);
    let renorm: Option<Vec<f64>> = cfg.top_entropy_renormalize.then(|| {
        let me: Vec<f64> = (0..rows)
            .map(|r| if kept[r] { b.mask[r] } else { 0.0 })
            .collect();
        weights_for(cfg, b, &me)
    });
    let beta = cfg.kl_coef as f64;
    let gamma = cfg.entropy_coeff as f64;
    let kappa = cfg.ppo_kl_coef as f64;
    let mut out = LossOutput {
        logp: stats.iter().map(|s| s.logp).collect(),
        entropy: stats.iter().map(|s| s.entropy).collect(),
        grad: vec![0.0; rows * v],
        ..Default::default()
    };
    let mut msum = 0.0;
    let mut m = Metrics::default();
    let (mut q_min, mut q_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &r in &masked_in {
        let mr = b.mask[r];
        let st = stats[r];
        let a = b.advantage(r);
        let (rt, clamped) = ratio(r);
        let term = match cfg.mode {
            PolicyLossMode::Reinforce | PolicyLossMode::Gpg => PolicyTerm {
                l: -a * st.logp,
                g: -a,
                clipped: false,
                dual_clipped: false,
            },
            PolicyLossMode::PpoClip => clipped_term(cfg, a, rt),
            PolicyLossMode::Gspo => clipped_term(cfg, a, seq_ratio[b.seq_of(r)]),
            PolicyLossMode::Cispo => {
                let c = rt.clamp(
                    1.0 - cfg.clip_ratio_low as f64,
                    1.0 + cfg.clip_ratio_high as f64,
                );
                PolicyTerm {
                    l: -c * a * st.logp,
                    g: -c * a,
                    clipped: c != rt,
                    dual_clipped: false,
                }
            }
            PolicyLossMode::Sapo => {
                let t = if a > 0.0 { cfg.tau_pos } else { cfg.tau_neg } as f64;
                let sig = 1.0 / (1.0 + (-t * (rt - 1.0)).exp());
                PolicyTerm {
                    l: -(4.0 / t) * sig * a,
                    g: if clamped {
                        0.0
                    } else {
                        -4.0 * sig * (1.0 - sig) * rt * a
                    },
                    clipped: false,
                    dual_clipped: false,
                }
            }
            PolicyLossMode::ClipCov => {
                let plain = LossConfig {
                    clip_ratio_c: None,
                    ..*cfg
                };
                let t = clipped_term(&plain, a, rt);
                if selected[r] {
                    PolicyTerm {
                        l: 0.0,
                        g: 0.0,
                        ..t
                    }
                } else {
                    t
                }
            }
            PolicyLossMode::KlCov => {
                let mut t = PolicyTerm {
                    l: -a * rt,
                    g: -a * rt,
                    clipped: false,
                    dual_clipped: false,
                };
                if selected[r] {
                    let d = b.old_logp.map_or(0.0, |old| st.logp - old[r]);
                    t.l += kappa * d.abs();
                    t.g += kappa
                        * if d > 0.0 {
                            1.0
                        } else if d < 0.0 {
                            -1.0
                        } else {
                            0.0
                        };
                }
                t
            }
        };
        // SPEC "Bad input": a NaN the row reads (its own, or its sequence's through the
        // GSPO ratio or the rollout weight) is its policy term and G
        let reads_nan = a.is_nan()
            || b.old_logp.is_some_and(|o| o[r].is_nan())
            || b.ref_logp.is_some_and(|x| x[r].is_nan())
            || q[r].is_nan()
            || (cfg.mode == PolicyLossMode::Gspo && seq_ratio[b.seq_of(r)].is_nan());
        let term = match reads_nan {
            true => PolicyTerm {
                l: f64::NAN,
                g: f64::NAN,
                ..term
            },
            false => term,
        };
        let (kl, dkl) = match b.ref_logp {
            Some(rf) => kl_term(cfg.kl_loss_type, st.logp, rf[r]),
            None => (0.0, 0.0),
        };
        let w = mr * weights[r];
        // the policy term's weight: w' (renormalised by the entropy mask) · q · e
        let e = if kept[r] { 1.0 } else { 0.0 };
        let wp = match &renorm {
            Some(c) => mr * e * c[r],
            None => w * e,
        } * q[r];
        out.loss += wp * term.l + w * (beta * kl - gamma * st.entropy);

        msum += mr;
        m.pg_clipfrac += mr * term.clipped as u8 as f64;
        m.pg_clipfrac_lower += mr * term.dual_clipped as u8 as f64;
        m.ppo_kl += b.old_logp.map_or(0.0, |old| mr * (old[r] - st.logp));
        m.kl += mr * kl;
        m.entropy_mean += mr * st.entropy;
        if !st.lse.is_finite() || st.entropy.is_nan() {
            m.nonfinite_rows += 1.0;
        }
        m.cov_selected_frac += mr * selected[r] as u8 as f64;
        m.entropy_mask_frac += mr * e;
        if cfg.rollout_correction.is_some() {
            m.rollout_is_mean += mr * q[r];
            m.rollout_is_clipfrac += mr * q_cut[r] as u8 as f64;
            q_min = q_min.min(q[r]);
            q_max = q_max.max(q[r]);
            m.rollout_logp_diff_max = m.rollout_logp_diff_max.max(delta[r].abs());
        }

        if w != 0.0 {
            let big_g = wp * term.g + w * beta * dkl;
            let mu = st.lse - st.entropy; // Σ p z
            let row = &b.logits[r * v..(r + 1) * v];
            for (j, &x) in row.iter().enumerate() {
                let z = x / tau;
                let p = (z - st.lse).exp();
                let onehot = (j == b.targets[r] as usize) as u8 as f64;
                let ent = if p == 0.0 {
                    0.0
                } else {
                    w * gamma * p * (z - mu)
                };
                out.grad[r * v + j] = (big_g * (onehot - p) + ent) / tau;
            }
        }
    }
    if msum > 0.0 {
        for x in [
            &mut m.pg_clipfrac,
            &mut m.pg_clipfrac_lower,
            &mut m.ppo_kl,
            &mut m.kl,
            &mut m.entropy_mean,
            &mut m.cov_selected_frac,
            &mut m.entropy_mask_frac,
            &mut m.rollout_is_mean,
            &mut m.rollout_is_clipfrac,
        ] {
            *x /= msum;
        }
    }
    if q_min <= q_max {
        m.rollout_is_min = q_min;
        m.rollout_is_max = q_max;
    }
    // a bad mask puts its row outside every mean, but makes the loss and its gradient NaN
    let read_rollout = rollout_logp.filter(|_| cfg.rollout_correction.is_some());
    for r in 0..rows {
        if mask_bad(b.mask[r]) {
            out.loss += f64::NAN;
            out.grad[r * v..(r + 1) * v].fill(f64::NAN);
        }
        if let Some((tensor, _)) = invalid_input(b, read_rollout, r) {
            m.invalid_input_rows += 1.0;
            m.first_invalid_input.get_or_insert((tensor, r));
        }
    }
    out.metrics = m;
    out.selected = selected;
    out.kept = kept;
    out.rollout_weight = q;
    Ok(out)
}

/// SPEC's advantage estimators over groups of `group_size` consecutive rewards.
pub fn advantages(
    estimator: crate::advantages::AdvantageEstimator,
    rewards: &[f64],
    group_size: usize,
) -> Vec<f64> {
    use crate::advantages::AdvantageEstimator as E;
    // Rewards taken about the first one, so that rewards that all agree give exactly 0
    // (as the kernel does): R − mean, Σ_{j≠i} R_j and the std are unchanged by the shift.
    let shifted = |xs: &[f64]| -> Vec<f64> { xs.iter().map(|x| x - xs[0]).collect() };
    let stats = |xs: &[f64]| {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0).max(1.0);
        (mean, var.sqrt())
    };
    if estimator == E::ReinforcePlusPlus {
        if rewards.len() < 2 {
            return vec![0.0; rewards.len()];
        }
        let d = shifted(rewards);
        let (mean, std) = stats(&d);
        return d.iter().map(|r| (r - mean) / (std + 1e-6)).collect();
    }
    // GPG's scale: the batch's size over its non-zero rewards
    let alpha = rewards.len() as f64 / rewards.iter().filter(|&&r| r != 0.0).count().max(1) as f64;
    rewards
        .chunks(group_size)
        .flat_map(|g| {
            let d = shifted(g);
            let (mean, std) = stats(&d);
            let sum: f64 = d.iter().sum();
            let n = g.len() as f64;
            d.iter()
                .map(|&r| match estimator {
                    _ if g.len() < 2 => 0.0,
                    E::Grpo => (r - mean) / (std + 1e-6),
                    E::GrpoNoStd => r - mean,
                    E::Gpg => alpha * (r - mean),
                    _ => r - (sum - r) / (n - 1.0),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
