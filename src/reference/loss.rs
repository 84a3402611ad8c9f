//! The loss, gradient and metrics of docs/MATH.md in f64: the batch checked, the row
//! statistics, the batch-wide choices, then each masked-in row's terms, metrics and
//! gradient.

use super::batch::{invalid_input, mask_bad, mask_in, row_weights, weights_for};
use super::sampler::{SampledRow, Sampler, SamplerBatch};
use super::select::{cov_selected, entropy_kept, rollout_weights, RolloutWeights};
use super::sequence::{
    add_sequence_terms, off_policy_kept, phi_seq_mean, sequences, SeqRow, SeqSlope, Sequences,
};
use super::terms::{kl_term, ratio, token_term, PolicyTerm, RowChoice, Token};
use super::{row_stats, softmax, Batch, LossOutput, Metrics, RowStats};
use crate::config::{LossConfig, PolicyLossMode};
use crate::Error;

/// The loss, gradient and metrics of docs/MATH.md, in f64: the batch checked as the host
/// path checks it (an `Err` naming the argument), then the sum of "Aggregation and
/// presets" and the gradient of "Gradient with respect to the logits". The
/// configuration's softcap and computed kept set apply; per-row temperatures and given
/// kept sets go through [`policy_loss_sampled`].
pub fn policy_loss(cfg: &LossConfig, b: &Batch<'_>) -> crate::Result<LossOutput> {
    policy_loss_with(cfg, b, None)
}

/// [`policy_loss`] with the sampler's log-probs (`rollout_logp`, one per row) for the
/// rollout correction, and the off-policy mask's σ (read whenever the mask is on).
pub fn policy_loss_with(
    cfg: &LossConfig,
    b: &Batch<'_>,
    rollout_logp: Option<&[f64]>,
) -> crate::Result<LossOutput> {
    if cfg.logit_softcap.is_some() || cfg.computes_kept_set() {
        // the configuration's softcap and kept-set rules shape the sampler's distribution
        let plain = SamplerBatch {
            sampler: Sampler::default(),
            temperatures: None,
            keep: None,
        };
        return policy_loss_sampled(cfg, b, rollout_logp, &plain);
    }
    check_batch(cfg, b, rollout_logp)?;
    loss_over(cfg, b, rollout_logp, None)
}

/// [`policy_loss_with`] under the sampler's distribution
/// (docs/MATH.md#the-samplers-distribution): every row's statistics, terms and gradient
/// over its kept set, with its softcap and temperature; 0 gradient outside the set. The
/// softcap is `sampler`'s, else the configuration's (`logit_softcap`), and so are
/// top-k, top-p and min-p (where `sampler` leaves them at their defaults). With every
/// option off it is [`policy_loss_with`], bit for bit.
pub fn policy_loss_sampled(
    cfg: &LossConfig,
    b: &Batch<'_>,
    rollout_logp: Option<&[f64]>,
    sampler: &SamplerBatch<'_>,
) -> crate::Result<LossOutput> {
    let mut sampler = *sampler;
    if sampler.sampler.softcap.is_none() {
        sampler.sampler.softcap = cfg.logit_softcap.map(f64::from);
    }
    let (k, p, m) = (
        sampler.sampler.top_k,
        sampler.sampler.top_p,
        sampler.sampler.min_p,
    );
    if (k, p, m) == (0, 1.0, 0.0) {
        sampler.sampler.top_k = cfg.top_k as i64;
        sampler.sampler.top_p = cfg.top_p as f64;
        sampler.sampler.min_p = cfg.min_p as f64;
    }
    let off = sampler.sampler == Sampler::default()
        && sampler.temperatures.is_none()
        && sampler.keep.is_none();
    if off {
        return policy_loss_with(cfg, b, rollout_logp);
    }
    check_batch(cfg, b, rollout_logp)?;
    let rows = sampler.rows(b, cfg.temperature as f64)?;
    loss_over(cfg, b, rollout_logp, Some(&rows))
}

/// The loss over the rows as they are (`sampled: None`: the plain softmax at the
/// config's temperature) or as the sampler shaped them.
fn loss_over(
    cfg: &LossConfig,
    b: &Batch<'_>,
    rollout_logp: Option<&[f64]>,
    sampled: Option<&[SampledRow]>,
) -> crate::Result<LossOutput> {
    let (rows, v) = (b.rows(), b.vocab);
    let tau = cfg.temperature as f64;
    let stats: Vec<RowStats> = match sampled {
        Some(s) => s
            .iter()
            .zip(b.targets)
            .map(|(row, &y)| sampled_stats(row, y))
            .collect(),
        None => (0..rows)
            .map(|r| row_stats(&b.logits[r * v..(r + 1) * v], b.targets[r] as usize, tau))
            .collect(),
    };
    let d = decide(cfg, b, stats, rollout_logp);
    let mut out = LossOutput {
        logp: d.stats.iter().map(|s| s.logp).collect(),
        entropy: d.stats.iter().map(|s| s.entropy).collect(),
        lse: d.stats.iter().map(|s| s.lse).collect(),
        grad: vec![0.0; rows * v],
        off_policy_kept: vec![1.0; rows],
        ..Default::default()
    };
    let (beta, gamma) = (cfg.kl_coef as f64, cfg.entropy_coeff as f64);
    let mut sums = Sums::new();
    // G_r of every row first: the sequence terms reach a row from its whole sequence
    let mut big_g = vec![0.0f64; rows];
    let mut slopes = Vec::with_capacity(d.masked_in.len());
    for &r in &d.masked_in {
        let row = row_terms(cfg, b, &d, r);
        let entropy = d.stats[r].entropy;
        out.loss += row.wp * row.term.l + row.w * (beta * row.kl - gamma * entropy);
        big_g[r] = row.wp * row.term.g + row.w * beta * row.dkl;
        slopes.push(SeqSlope {
            row: r,
            policy: row.wp * row.h,
            kl: row.w * row.kl_raw,
        });
        out.off_policy_kept[r] = row.o;
        let metrics = RowMetrics {
            term: row.term,
            kl: row.kl,
            entropy_kept: row.e,
            off_policy: row.o,
            selected: d.selected[r],
        };
        sums.add(cfg, b, &d.stats[r], &d.rollout, r, metrics);
    }
    add_sequence_terms(cfg, b, &d.seqs, &slopes, &mut big_g);
    gradients(cfg, b, &d, &big_g, sampled, &mut out);
    out.metrics = sums.finish();
    out.metrics.vespo_phi_seq_mean = phi_seq_mean(cfg, b, &d.seqs, &d.masked_in);
    bad_rows(cfg, b, rollout_logp, &mut out);
    out.selected = d.selected;
    out.kept = d.kept;
    out.rollout_weight = d.rollout.q;
    Ok(out)
}

/// The batch-wide decisions every row reads: its sequence's quantities, the rollout
/// weights, the entropy mask, the covariance selection and the aggregation weights.
struct Decided {
    stats: Vec<RowStats>,
    masked_in: Vec<usize>,
    rollout: RolloutWeights,
    seqs: Sequences,
    kept: Vec<bool>,
    selected: Vec<bool>,
    weights: Vec<f64>,
    /// The entropy mask's renormalised weights, over m·e.
    renorm: Option<Vec<f64>>,
}

fn decide(
    cfg: &LossConfig,
    b: &Batch<'_>,
    stats: Vec<RowStats>,
    rollout_logp: Option<&[f64]>,
) -> Decided {
    let rows = b.rows();
    let masked_in: Vec<usize> = (0..rows).filter(|&r| mask_in(b.mask[r])).collect();
    let rollout = rollout_weights(cfg, b, &stats, &masked_in, rollout_logp);
    let seqs = sequences(cfg, b, &stats, &masked_in, &rollout, rollout_logp);
    let kept = entropy_kept(cfg, &stats, &masked_in);
    let selected = cov_selected(cfg, b, &stats, &masked_in);
    let renorm: Option<Vec<f64>> = cfg.top_entropy_renormalize.then(|| {
        let me: Vec<f64> = (0..rows)
            .map(|r| if kept[r] { b.mask[r] } else { 0.0 })
            .collect();
        weights_for(cfg, b, &me)
    });
    Decided {
        weights: row_weights(cfg, b),
        stats,
        masked_in,
        rollout,
        seqs,
        kept,
        selected,
        renorm,
    }
}

/// One masked-in row's terms: its policy term (and `∂l/∂s_b`), the aggregation weight
/// `w`, the policy weight `W = w'·q·e·o`, the masks, and the KL term as it enters the
/// loss (`kl'`, its own derivative) beside the plain `kl` the sequence terms sum.
struct Row {
    term: PolicyTerm,
    h: f64,
    w: f64,
    wp: f64,
    e: f64,
    o: f64,
    kl: f64,
    dkl: f64,
    kl_raw: f64,
}

fn row_terms(cfg: &LossConfig, b: &Batch<'_>, d: &Decided, r: usize) -> Row {
    let seq = d.seqs.row(b.seq_of(r));
    let choice = RowChoice {
        seq,
        selected: d.selected[r],
    };
    let token = token_term(cfg, b, &d.stats, r, choice);
    let Token { term, h } = nan_if_read(cfg, b, r, (&d.rollout, seq), token);
    let w = b.mask[r] * d.weights[r];
    let e = if d.kept[r] { 1.0 } else { 0.0 };
    let o = off_policy_kept(cfg, b.advantage(r), seq.off_policy);
    let wp = match cfg.mode {
        // GMPO's own weight (verl's mean over sequences) and rollout weight q_b
        PolicyLossMode::GeoMean => b.mask[r] / (seq.n * b.seqs() as f64) * seq.geo_q,
        _ => {
            let base = match &d.renorm {
                Some(c) => b.mask[r] * e * c[r],
                None => w * e,
            };
            // VESPO's rollout weights are inside φ
            let q = match cfg.mode {
                PolicyLossMode::Vespo => 1.0,
                _ => d.rollout.q[r],
            };
            base * q
        }
    } * o;
    let (kl_raw, dkl_raw) = match b.ref_logp {
        Some(rf) => kl_term(cfg.kl_loss_type, d.stats[r].logp, rf[r]),
        None => (0.0, 0.0),
    };
    let (kl, dkl) = bias_corrected(cfg, b, &d.stats, r, seq, (kl_raw, dkl_raw));
    Row {
        term,
        h,
        w,
        wp,
        e,
        o,
        kl,
        dkl,
        kl_raw,
    }
}

/// TRL's `use_bias_correction_kl`: `kl' = kl·ρ` and this row's own `∂kl'/∂logp`. At
/// the token level `ρ = r_t` (`r·∂kl + r·kl`, the second 0 where the clamp is active);
/// at the sequence level `ρ = s_b`, whose derivative reaches the whole sequence
/// (`add_sequence_terms`).
fn bias_corrected(
    cfg: &LossConfig,
    b: &Batch<'_>,
    stats: &[RowStats],
    r: usize,
    seq: SeqRow,
    (kl, dkl): (f64, f64),
) -> (f64, f64) {
    if !cfg.bias_corrected_kl() {
        return (kl, dkl);
    }
    if cfg.sequence_ratio() {
        return (kl * seq.ratio, seq.ratio * dkl);
    }
    let (rt, clamped) = ratio(b, stats, r);
    let through_r = if clamped { 0.0 } else { rt * kl };
    (kl * rt, rt * dkl + through_r)
}

/// The errors the host path gives (docs/MATH.md#bad-input): lengths, required inputs,
/// out-of-range ids.
fn check_batch(cfg: &LossConfig, b: &Batch<'_>, rollout_logp: Option<&[f64]>) -> crate::Result<()> {
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
    cfg.check_optional_inputs(b.ref_logp.is_some(), rollout_logp.is_some())?;
    match (0..rows).find(|&r| mask_in(b.mask[r]) && b.targets[r] as usize >= v) {
        Some(r) => Err(Error::TargetOutOfRange {
            row: r,
            id: b.targets[r] as i64,
            vocab: v as u32,
        }),
        None => Ok(()),
    }
}

/// docs/MATH.md#bad-input: a NaN the row reads (its own, or its sequence's through the
/// sequence ratio, GMPO's `ρ_b`, `Ā_b`, `q_b`, VESPO's `L_b` or the rollout weight) is
/// its policy term, its slope through the sequence ratio and its G. (A NaN `κ̄_b`
/// reaches the row through `o`.)
fn nan_if_read(
    cfg: &LossConfig,
    b: &Batch<'_>,
    r: usize,
    (rollout, seq): (&RolloutWeights, SeqRow),
    token: Token,
) -> Token {
    let seq_nan = match cfg.mode {
        PolicyLossMode::GeoMean => {
            seq.geo_rho.is_nan() || seq.geo_adv.is_nan() || seq.geo_q.is_nan()
        }
        PolicyLossMode::Vespo => seq.vespo_l.is_nan(),
        _ => cfg.sequence_ratio() && seq.ratio.is_nan(),
    };
    let reads_nan = b.advantage(r).is_nan()
        || b.old_logp.is_some_and(|o| o[r].is_nan())
        || b.ref_logp.is_some_and(|x| x[r].is_nan())
        || rollout.q[r].is_nan()
        || seq_nan;
    match reads_nan {
        true => Token {
            term: PolicyTerm {
                l: f64::NAN,
                g: f64::NAN,
                ..token.term
            },
            h: f64::NAN,
        },
        false => token,
    }
}

/// Every weighted row's gradient `G·∂logp/∂x − w·γ·∂H/∂x` (over its kept set where the
/// sampler shaped it), and the slopes the comparison's bound reads.
fn gradients(
    cfg: &LossConfig,
    b: &Batch<'_>,
    d: &Decided,
    big_g: &[f64],
    sampled: Option<&[SampledRow]>,
    out: &mut LossOutput,
) {
    let (rows, v) = (b.rows(), b.vocab);
    let (tau, gamma) = (cfg.temperature as f64, cfg.entropy_coeff as f64);
    out.slope = vec![0.0; rows];
    out.entropy_slope = vec![0.0; rows];
    for &r in &d.masked_in {
        let w = b.mask[r] * d.weights[r];
        if w == 0.0 {
            continue;
        }
        let grad = &mut out.grad[r * v..(r + 1) * v];
        let y = b.targets[r] as usize;
        match sampled.map(|s| &s[r]) {
            Some(row) => {
                // the slope's scale for the comparison's bound: G·dz at its largest (a
                // NaN dz, of a NaN logit, kept)
                let dz = row.dz.iter().copied().fold(0.0, super::compare::max_err);
                out.slope[r] = big_g[r] * dz;
                out.entropy_slope[r] = w * gamma * dz;
                grad.copy_from_slice(&row.loss_grad(y, big_g[r], w * gamma));
            }
            None => {
                out.slope[r] = big_g[r] / tau;
                out.entropy_slope[r] = w * gamma / tau;
                let logits = &b.logits[r * v..(r + 1) * v];
                row_grad(logits, y, tau, big_g[r], w * gamma, grad);
            }
        }
    }
}

/// A sampled row's statistics; its log-prob NaN where the target is outside its set or
/// the vocabulary (a row the loss does not read: [`SamplerBatch::rows`] refused the
/// others).
fn sampled_stats(row: &SampledRow, y: u32) -> RowStats {
    RowStats {
        lse: row.lse,
        logp: row.logp(y as usize).unwrap_or(f64::NAN),
        entropy: row.entropy,
    }
}

/// `∂loss/∂x` of one row: `(G·(onehot − p) + w·γ·p·((z − m) − μ)) / τ`, with `μ` the
/// mean of `z − m` under `p` about the row's largest `z` (row_stats's reason).
fn row_grad(x: &[f64], y: usize, tau: f64, big_g: f64, w_gamma: f64, grad: &mut [f64]) {
    let probs = softmax(x, tau);
    let m_z = x.iter().map(|&v| v / tau).fold(f64::NEG_INFINITY, f64::max);
    let mu_rel: f64 = (0..x.len())
        .filter(|&j| probs[j] != 0.0)
        .map(|j| probs[j] * (x[j] / tau - m_z))
        .sum();
    for (j, (&xj, g)) in x.iter().zip(grad.iter_mut()).enumerate() {
        let p = probs[j];
        let onehot = (j == y) as u8 as f64;
        let ent = match p == 0.0 {
            true => 0.0,
            false => w_gamma * p * ((xj / tau - m_z) - mu_rel),
        };
        *g = (big_g * (onehot - p) + ent) / tau;
    }
}

/// A bad mask puts its row outside every mean, but makes the loss and its gradient
/// NaN; every bad per-row input is counted, the first named.
fn bad_rows(cfg: &LossConfig, b: &Batch<'_>, rollout_logp: Option<&[f64]>, out: &mut LossOutput) {
    let v = b.vocab;
    // the rollout log-probs are read by the correction and by the off-policy mask's σ
    let reads = cfg.rollout_correction.is_some() || cfg.off_policy_mask_threshold.is_some();
    let read_rollout = rollout_logp.filter(|_| reads);
    for r in 0..b.rows() {
        if mask_bad(b.mask[r]) {
            out.loss += f64::NAN;
            out.grad[r * v..(r + 1) * v].fill(f64::NAN);
        }
        if let Some((tensor, _)) = invalid_input(b, read_rollout, r) {
            out.metrics.invalid_input_rows += 1.0;
            out.metrics.first_invalid_input.get_or_insert((tensor, r));
        }
    }
}

/// What one masked-in row adds to the metrics beside its inputs.
struct RowMetrics {
    term: PolicyTerm,
    kl: f64,
    entropy_kept: f64,
    off_policy: f64,
    selected: bool,
}

/// The metrics' sums over masked-in rows, weighted by the mask.
struct Sums {
    m: Metrics,
    mask: f64,
    q_min: f64,
    q_max: f64,
}

impl Sums {
    fn new() -> Self {
        Sums {
            m: Metrics::default(),
            mask: 0.0,
            q_min: f64::INFINITY,
            q_max: f64::NEG_INFINITY,
        }
    }

    fn add(
        &mut self,
        cfg: &LossConfig,
        b: &Batch<'_>,
        st: &RowStats,
        rollout: &RolloutWeights,
        r: usize,
        row: RowMetrics,
    ) {
        let (m, mr) = (&mut self.m, b.mask[r]);
        self.mask += mr;
        m.pg_clipfrac += mr * row.term.clipped as u8 as f64;
        m.pg_clipfrac_lower += mr * row.term.dual_clipped as u8 as f64;
        m.ppo_kl += b.old_logp.map_or(0.0, |old| mr * (old[r] - st.logp));
        m.kl += mr * row.kl;
        m.entropy_mean += mr * st.entropy;
        if !st.lse.is_finite() || st.entropy.is_nan() {
            m.nonfinite_rows += 1.0;
        }
        m.cov_selected_frac += mr * row.selected as u8 as f64;
        m.entropy_mask_frac += mr * row.entropy_kept;
        m.off_policy_mask_frac += mr * row.off_policy;
        if cfg.rollout_correction.is_some() {
            let q = rollout.q[r];
            m.rollout_is_mean += mr * q;
            m.rollout_is_clipfrac += mr * rollout.cut[r] as u8 as f64;
            self.q_min = self.q_min.min(q);
            self.q_max = self.q_max.max(q);
            m.rollout_logp_diff_max = m.rollout_logp_diff_max.max(rollout.delta[r].abs());
        }
    }

    /// The masked means, and the rollout weights' range where there are any.
    fn finish(mut self) -> Metrics {
        let m = &mut self.m;
        if self.mask > 0.0 {
            for x in [
                &mut m.pg_clipfrac,
                &mut m.pg_clipfrac_lower,
                &mut m.ppo_kl,
                &mut m.kl,
                &mut m.entropy_mean,
                &mut m.cov_selected_frac,
                &mut m.entropy_mask_frac,
                &mut m.off_policy_mask_frac,
                &mut m.rollout_is_mean,
                &mut m.rollout_is_clipfrac,
            ] {
                *x /= self.mask;
            }
        }
        if self.q_min <= self.q_max {
            m.rollout_is_min = self.q_min;
            m.rollout_is_max = self.q_max;
        }
        self.m
    }
}
