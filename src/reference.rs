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
    fn advantage(&self, r: usize) -> f64 {
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
            let d = delta.clamp(-20.0, 20.0);
            let kl = d.exp() - d - 1.0;
            let klc = kl.clamp(-10.0, 10.0);
            let active = d != delta || klc != kl;
            (klc, if active { 0.0 } else { 1.0 - delta.exp() })
        }
    }
}

/// The sequence weight `w_r / m_r` of every row (SPEC "Aggregation").
pub fn row_weights(cfg: &LossConfig, b: &Batch<'_>) -> Vec<f64> {
    let seqs = b.seqs();
    let mut n = vec![0.0f64; seqs];
    for r in 0..b.rows() {
        n[b.seq_of(r)] += b.mask[r];
    }
    let total: f64 = n.iter().sum();
    let nonempty = n.iter().filter(|&&x| x > 0.0).count() as f64;
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

/// SPEC's loss, gradient and metrics, in f64.
pub fn policy_loss(cfg: &LossConfig, b: &Batch<'_>) -> crate::Result<LossOutput> {
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
    for r in 0..rows {
        if b.mask[r] > 0.0 && b.targets[r] as usize >= v {
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

    // GSPO: one ratio per sequence, from the masked mean log-ratio
    let mut seq_ratio = vec![1.0f64; b.seqs()];
    if let (PolicyLossMode::Gspo, Some(old)) = (cfg.mode, b.old_logp) {
        let mut num = vec![0.0f64; b.seqs()];
        let mut den = vec![0.0f64; b.seqs()];
        for r in (0..rows).filter(|&r| b.mask[r] > 0.0) {
            num[b.seq_of(r)] += b.mask[r] * (stats[r].logp - old[r]);
            den[b.seq_of(r)] += b.mask[r];
        }
        for s in 0..b.seqs() {
            let mean = if den[s] > 0.0 { num[s] / den[s] } else { 0.0 };
            seq_ratio[s] = mean.clamp(-20.0, 20.0).exp();
        }
    }

    let weights = row_weights(cfg, b);
    let beta = cfg.kl_coef as f64;
    let gamma = cfg.entropy_coeff as f64;
    let mut out = LossOutput {
        logp: stats.iter().map(|s| s.logp).collect(),
        entropy: stats.iter().map(|s| s.entropy).collect(),
        grad: vec![0.0; rows * v],
        ..Default::default()
    };
    let mut msum = 0.0;
    let mut m = Metrics::default();
    for r in 0..rows {
        let mr = b.mask[r];
        if mr <= 0.0 {
            continue;
        }
        let st = stats[r];
        let a = b.advantage(r);
        let term = match cfg.mode {
            PolicyLossMode::Reinforce => PolicyTerm {
                l: -a * st.logp,
                g: -a,
                clipped: false,
                dual_clipped: false,
            },
            PolicyLossMode::PpoClip => {
                let ratio = b
                    .old_logp
                    .map_or(1.0, |old| (st.logp - old[r]).clamp(-20.0, 20.0).exp());
                clipped_term(cfg, a, ratio)
            }
            PolicyLossMode::Gspo => clipped_term(cfg, a, seq_ratio[b.seq_of(r)]),
        };
        let (kl, dkl) = match b.ref_logp {
            Some(rf) => kl_term(cfg.kl_loss_type, st.logp, rf[r]),
            None => (0.0, 0.0),
        };
        let loss_t = term.l + beta * kl - gamma * st.entropy;
        let w = mr * weights[r];
        out.loss += w * loss_t;

        msum += mr;
        m.pg_clipfrac += mr * term.clipped as u8 as f64;
        m.pg_clipfrac_lower += mr * term.dual_clipped as u8 as f64;
        m.ppo_kl += b.old_logp.map_or(0.0, |old| mr * (old[r] - st.logp));
        m.kl += mr * kl;
        m.entropy_mean += mr * st.entropy;
        if !st.lse.is_finite() || st.entropy.is_nan() {
            m.nonfinite_rows += 1.0;
        }

        if w != 0.0 {
            let big_g = term.g + beta * dkl;
            let mu = st.lse - st.entropy; // Σ p z
            let row = &b.logits[r * v..(r + 1) * v];
            for (j, &x) in row.iter().enumerate() {
                let z = x / tau;
                let p = (z - st.lse).exp();
                let onehot = (j == b.targets[r] as usize) as u8 as f64;
                let ent = if p == 0.0 { 0.0 } else { gamma * p * (z - mu) };
                out.grad[r * v + j] = (w / tau) * (big_g * (onehot - p) + ent);
            }
        }
    }
    if msum > 0.0 {
        m.pg_clipfrac /= msum;
        m.pg_clipfrac_lower /= msum;
        m.ppo_kl /= msum;
        m.kl /= msum;
        m.entropy_mean /= msum;
    }
    out.metrics = m;
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
                    _ => r - (sum - r) / (n - 1.0),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
