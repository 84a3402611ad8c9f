//! SPEC's loss, gradient and metrics in f64: the batch checked, the row statistics,
//! the batch-wide choices, then each masked-in row's terms, metrics and gradient.

use super::batch::{invalid_input, mask_bad, mask_in, row_weights, weights_for};
use super::select::{cov_selected, entropy_kept, gspo_ratios, rollout_weights, RolloutWeights};
use super::terms::{kl_term, token_term, PolicyTerm, RowChoice};
use super::{row_stats, softmax, Batch, LossOutput, Metrics, RowStats};
use crate::config::{LossConfig, PolicyLossMode};
use crate::Error;

/// SPEC's loss, gradient and metrics, in f64.
pub fn policy_loss(cfg: &LossConfig, b: &Batch<'_>) -> crate::Result<LossOutput> {
    policy_loss_with(cfg, b, None)
}

/// [`policy_loss`] with the sampler's log-probs (`rollout_logp`, one per row) for the
/// rollout correction.
pub fn policy_loss_with(
    cfg: &LossConfig,
    b: &Batch<'_>,
    rollout_logp: Option<&[f64]>,
) -> crate::Result<LossOutput> {
    check_batch(cfg, b, rollout_logp)?;
    let (rows, v) = (b.rows(), b.vocab);
    let tau = cfg.temperature as f64;
    let stats: Vec<RowStats> = (0..rows)
        .map(|r| row_stats(&b.logits[r * v..(r + 1) * v], b.targets[r] as usize, tau))
        .collect();
    let masked_in: Vec<usize> = (0..rows).filter(|&r| mask_in(b.mask[r])).collect();
    let seq_ratio = gspo_ratios(cfg, b, &stats, &masked_in);
    let rollout = rollout_weights(cfg, b, &stats, &masked_in, rollout_logp);
    let kept = entropy_kept(cfg, &stats, &masked_in);
    let selected = cov_selected(cfg, b, &stats, &masked_in);
    let weights = row_weights(cfg, b);
    // the entropy mask's renormalised weights, over m·e
    let renorm: Option<Vec<f64>> = cfg.top_entropy_renormalize.then(|| {
        let me: Vec<f64> = (0..rows)
            .map(|r| if kept[r] { b.mask[r] } else { 0.0 })
            .collect();
        weights_for(cfg, b, &me)
    });
    let mut out = LossOutput {
        logp: stats.iter().map(|s| s.logp).collect(),
        entropy: stats.iter().map(|s| s.entropy).collect(),
        grad: vec![0.0; rows * v],
        ..Default::default()
    };
    let mut sums = Sums::new();
    for &r in &masked_in {
        let choice = RowChoice {
            seq_ratio: seq_ratio[b.seq_of(r)],
            selected: selected[r],
        };
        let reads = (&rollout, choice.seq_ratio);
        let term = nan_if_read(cfg, b, r, reads, token_term(cfg, b, &stats, r, choice));
        let w = b.mask[r] * weights[r];
        // the policy term's weight: w' (renormalised by the entropy mask) · q · e
        let e = if kept[r] { 1.0 } else { 0.0 };
        let wp = match &renorm {
            Some(c) => b.mask[r] * e * c[r],
            None => w * e,
        } * rollout.q[r];
        let (kl, dkl) = match b.ref_logp {
            Some(rf) => kl_term(cfg.kl_loss_type, stats[r].logp, rf[r]),
            None => (0.0, 0.0),
        };
        let (beta, gamma) = (cfg.kl_coef as f64, cfg.entropy_coeff as f64);
        out.loss += wp * term.l + w * (beta * kl - gamma * stats[r].entropy);
        let row = RowMetrics {
            term,
            kl,
            entropy_kept: e,
            selected: selected[r],
        };
        sums.add(cfg, b, &stats[r], &rollout, r, row);
        if w != 0.0 {
            let big_g = wp * term.g + w * beta * dkl;
            let logits = &b.logits[r * v..(r + 1) * v];
            let grad = &mut out.grad[r * v..(r + 1) * v];
            row_grad(logits, b.targets[r] as usize, tau, big_g, w * gamma, grad);
        }
    }
    out.metrics = sums.finish();
    bad_rows(cfg, b, rollout_logp, &mut out);
    out.selected = selected;
    out.kept = kept;
    out.rollout_weight = rollout.q;
    Ok(out)
}

/// The errors SPEC's host path gives: lengths, required inputs, out-of-range ids.
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
    if cfg.kl_coef != 0.0 && b.ref_logp.is_none() {
        return Err(Error::arg("ref_logprobs", "required when kl_coef is not 0"));
    }
    if cfg.rollout_correction.is_some() && rollout_logp.is_none() {
        return Err(Error::arg(
            "rollout_logprobs",
            "required by the rollout correction",
        ));
    }
    match (0..rows).find(|&r| mask_in(b.mask[r]) && b.targets[r] as usize >= v) {
        Some(r) => Err(Error::TargetOutOfRange {
            row: r,
            id: b.targets[r] as i64,
            vocab: v as u32,
        }),
        None => Ok(()),
    }
}

/// SPEC "Bad input": a NaN the row reads (its own, or its sequence's through the GSPO
/// ratio or the rollout weight) is its policy term and G.
fn nan_if_read(
    cfg: &LossConfig,
    b: &Batch<'_>,
    r: usize,
    (rollout, seq_ratio): (&RolloutWeights, f64),
    term: PolicyTerm,
) -> PolicyTerm {
    let gspo_nan = cfg.mode == PolicyLossMode::Gspo && seq_ratio.is_nan();
    let reads_nan = b.advantage(r).is_nan()
        || b.old_logp.is_some_and(|o| o[r].is_nan())
        || b.ref_logp.is_some_and(|x| x[r].is_nan())
        || rollout.q[r].is_nan()
        || gspo_nan;
    match reads_nan {
        true => PolicyTerm {
            l: f64::NAN,
            g: f64::NAN,
            ..term
        },
        false => term,
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
    let read_rollout = rollout_logp.filter(|_| cfg.rollout_correction.is_some());
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
