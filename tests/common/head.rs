//! The fused head's test harness (tests/head.rs, tests/head_eval.rs): a batch of
//! hidden states and an lm-head weight with the per-row inputs of a [`LossCase`], and
//! the comparison of a head call with the f64 reference.

use super::*;
use wgpu_policy_loss::reference::{compare, head_grads, head_logits, head_magnitudes};
use wgpu_policy_loss::{
    Context, DType, HostHead, HostHeadLoss, KlEstimator, LossAggMode, LossConfig, PolicyLossMode,
};

/// A head batch: hidden `[rows, h]` and lm_head `[vocab, h]` in a dtype, the per-row
/// inputs of a [`LossCase`] whose old and ref log-probs lie near the head's own.
pub struct HeadCase {
    pub h: u32,
    pub hidden: Logits,
    pub lm_head: Logits,
    pub case: LossCase,
}

impl HeadCase {
    pub fn new(seed: u64, (seqs, rps, vocab, h): (u32, u32, u32, u32), dtype: DType) -> Self {
        let rows = (seqs * rps) as usize;
        let hidden = Logits::from_f32(dtype, &random_logits(seed + 7, rows * h as usize, 0.5));
        let w_scale = 2.0 / (h as f32).sqrt();
        let lm_head = Logits::from_f32(
            dtype,
            &random_logits(seed + 8, vocab as usize * h as usize, w_scale),
        );
        Self::from_matrices(seed, (seqs, rps), h, hidden, lm_head)
    }

    /// The case of these hidden states and weight (`[seqs · rps, h]`, `[V, h]`), the
    /// per-row inputs of a [`LossCase`] whose old and ref log-probs lie near the
    /// head's own.
    pub fn from_matrices(
        seed: u64,
        (seqs, rps): (u32, u32),
        h: u32,
        hidden: Logits,
        lm_head: Logits,
    ) -> Self {
        let vocab = (lm_head.host().len() / h as usize) as u32;
        let mut case = LossCase::new(seed, seqs, rps, vocab);
        let x = logits_by_blocks(&hidden, &lm_head, h as usize);
        case.logits = x.iter().map(|&v| v as f32).collect();
        // the old and ref log-probs move with the head's logits (near 1 ratios)
        let ids: Vec<u32> = case.targets.iter().map(|&t| t.min(vocab - 1)).collect();
        let exact =
            wgpu_policy_loss::reference::row_stats_batch(&case.logits, vocab as usize, &ids, 1.0);
        for (i, s) in exact.iter().enumerate() {
            let shift = (case.old[i] as f64 - s.logp).clamp(-5.0, 0.6);
            case.old[i] = (s.logp
                + if i % 5 == 2 {
                    -5.0
                } else {
                    shift.clamp(-0.6, 0.6)
                }) as f32;
            case.refp[i] = case.old[i] + 0.3 * ((i % 3) as f32 - 1.0);
            if case.mask[i] > 0.0 {
                case.rollout[i] = case.old[i] + 0.2 * ((i % 4) as f32 - 1.5);
            }
        }
        HeadCase {
            h,
            hidden,
            lm_head,
            case,
        }
    }

    pub fn host(&self, using: Use, rollout: bool, chunk: Option<u32>) -> HostHead<'_> {
        let c = &self.case;
        HostHead {
            kept: c.kept(),
            temperatures: c.temps.as_deref(),
            hidden: self.hidden.host(),
            lm_head: self.lm_head.host(),
            hidden_dim: self.h,
            rows_per_seq: Some(c.rows_per_seq),
            targets: &c.targets,
            mask: &c.mask,
            advantages: if using.per_token_adv {
                &c.adv_tok
            } else {
                &c.adv_seq
            },
            old_logprobs: using.old.then_some(&c.old[..]),
            ref_logprobs: using.refp.then_some(&c.refp[..]),
            rollout_logprobs: rollout.then_some(&c.rollout[..]),
            chunk_rows: chunk,
        }
    }
}

/// ∂L/∂h or ∂L/∂W against the reference by the library's rule for sums over the
/// logits' gradient Gz (`reference::compare::head_grad`): `n` terms, `sums` each
/// element's magnitudes.
pub fn check_grad(
    what: &str,
    got: &wgpu_policy_loss::HostGrad,
    want: &[f64],
    (n, gz_max, sums): (usize, f64, &[[f64; 2]]),
) {
    compare::head_grad(&got.to_f32(), want, got.dtype.into(), n, gz_max, sums)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Rows of W widened to f64 at once by the blocked reference below (a model's W in
/// f64 would be gigabytes).
const REF_BLOCK: usize = 2048;

/// The reference's `x = h·Wᵀ` ([`head_logits`]), W widened a block of rows at a time:
/// the same sums, never `V × H` f64 at once.
pub fn logits_by_blocks(hidden: &Logits, lm_head: &Logits, h: usize) -> Vec<f64> {
    let hv = hidden.values();
    let (rows, vocab) = (hv.len() / h, lm_head.host().len() / h);
    let mut x = vec![0.0; rows * vocab];
    for v0 in (0..vocab).step_by(REF_BLOCK) {
        let n = REF_BLOCK.min(vocab - v0);
        let xb = head_logits(&hv, &lm_head.values_in(v0 * h, (v0 + n) * h), h);
        for r in 0..rows {
            x[r * vocab + v0..r * vocab + v0 + n].copy_from_slice(&xb[r * n..(r + 1) * n]);
        }
    }
    x
}

/// The reference's `(∂L/∂h, ∂L/∂W)` ([`head_grads`]) from `gz` (`rows × V`), W a
/// block of rows at a time: ∂L/∂h whole (the blocks' sums added in order), ∂L/∂W's
/// rows `keep` only.
pub fn grads_by_blocks(
    gz: &[f64],
    (hidden, lm_head, h): (&Logits, &Logits, usize),
    mask: &[f64],
    keep: &[usize],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let hv = hidden.values();
    let (rows, vocab) = (hv.len() / h, lm_head.host().len() / h);
    let mut dh = vec![0.0; rows * h];
    let mut dw = vec![Vec::new(); keep.len()];
    for v0 in (0..vocab).step_by(REF_BLOCK) {
        let n = REF_BLOCK.min(vocab - v0);
        let gb: Vec<f64> = (0..rows)
            .flat_map(|r| gz[r * vocab + v0..r * vocab + v0 + n].iter().copied())
            .collect();
        let w = lm_head.values_in(v0 * h, (v0 + n) * h);
        let (dhb, dwb) = head_grads(&gb, &hv, &w, h, mask);
        dh.iter_mut().zip(&dhb).for_each(|(a, b)| *a += b);
        for (i, &v) in keep.iter().enumerate() {
            if (v0..v0 + n).contains(&v) {
                dw[i] = dwb[(v - v0) * h..(v - v0 + 1) * h].to_vec();
            }
        }
    }
    (dh, dw)
}

/// Every element of `g` (read from a gradient of `dtype`) within `2e-4·max|want|` (+ the
/// output dtype's half ulp): for the blocked cases, whose references are too large
/// to carry the magnitudes [`check_grad`] scales by; the largest error and the largest
/// |want|.
pub fn check_values(what: &str, dtype: DType, g: &[f32], want: &[f64]) -> (f64, f64) {
    assert_eq!(g.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |a, &b| a.max(b.abs())).max(1e-30);
    let mut worst = 0.0f64;
    let rel = match dtype {
        DType::F32 => 0.0,
        DType::F16 => 2f64.powi(-11),
        DType::Bf16 => 2f64.powi(-8),
    };
    for (i, (&gg, &w)) in g.iter().zip(want).enumerate() {
        let t = 2e-4 * scale + 1e-9 + rel * w.abs() * 1.01;
        let err = (gg as f64 - w).abs();
        assert!(
            err <= t,
            "{what}: [{i}] = {gg}, want {w} (err {err:.3e} > {t:.3e})"
        );
        worst = worst.max(err);
    }
    (worst, scale)
}

/// Runs the head on `hc` and compares everything with the reference.
pub fn check_head(
    ctx: &Context,
    cfg: &LossConfig,
    hc: &HeadCase,
    grad: Option<DType>,
    chunk: Option<u32>,
    (using, rollout): (Use, bool),
) -> HostHeadLoss {
    let c = &hc.case;
    let what = format!(
        "{} {}→{grad:?} chunk {chunk:?} {cfg:?} {using:?}",
        name(ctx),
        hc.hidden.dtype
    );
    let got = ctx
        .policy_loss_head(cfg, &hc.host(using, rollout, chunk), grad)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let x = head_logits(&hc.hidden.values(), &hc.lm_head.values(), hc.h as usize);
    let want = c.reference(cfg, &x, using, rollout);
    let tol = |w: f64| 5e-5 + 5e-5 * w.abs();
    let m = &got.loss.metrics;
    for (label, g, w) in [
        ("loss", m.loss, want.loss),
        ("pg_clipfrac", m.pg_clipfrac, want.metrics.pg_clipfrac),
        ("ppo_kl", m.ppo_kl, want.metrics.ppo_kl),
        ("kl", m.kl, want.metrics.kl),
        ("entropy_mean", m.entropy_mean, want.metrics.entropy_mean),
        (
            "nonfinite_rows",
            m.nonfinite_rows,
            want.metrics.nonfinite_rows,
        ),
    ] {
        close(g, w, tol(w)).unwrap_or_else(|e| panic!("{what}: {label}: {e}"));
    }
    for r in (0..c.rows()).filter(|&r| c.mask[r] > 0.0) {
        close(
            got.loss.logprobs[r],
            want.logp[r],
            tolerance(want.logp[r].abs() + 10.0),
        )
        .unwrap_or_else(|e| panic!("{what}: logprobs[{r}]: {e}"));
        close(got.loss.entropy[r], want.entropy[r], tolerance(10.0))
            .unwrap_or_else(|e| panic!("{what}: entropy[{r}]: {e}"));
        let lse_tol = tolerance(want.lse[r].abs() + 10.0);
        close(got.loss.lse[r], want.lse[r], lse_tol)
            .unwrap_or_else(|e| panic!("{what}: lse[{r}]: {e}"));
    }
    if grad.is_some() {
        let mask: Vec<f64> = c.mask.iter().map(|&m| m as f64).collect();
        let (hidden, lm_head) = (hc.hidden.values(), hc.lm_head.values());
        let (dh, dw) = head_grads(&want.grad, &hidden, &lm_head, hc.h as usize, &mask);
        let (sh, sw) = head_magnitudes(&want.grad, &hidden, &lm_head, hc.h as usize, &mask);
        let gz_max = compare::largest_finite(&want.grad);
        check_grad(
            &format!("{what}: grad_hidden"),
            got.grad_hidden.as_ref().unwrap(),
            &dh,
            (c.vocab as usize, gz_max, &sh),
        );
        check_grad(
            &format!("{what}: grad_lm_head"),
            got.grad_lm_head.as_ref().unwrap(),
            &dw,
            (c.rows(), gz_max, &sw),
        );
        let gh = got.grad_hidden.as_ref().unwrap().to_f32();
        for r in (0..c.rows()).filter(|&r| c.mask[r] == 0.0) {
            let row = &gh[r * hc.h as usize..(r + 1) * hc.h as usize];
            assert!(
                row.iter().all(|&v| v == 0.0),
                "{what}: masked row {r} has a gradient"
            );
        }
    }
    got
}

pub fn ppo() -> LossConfig {
    loss_config(
        PolicyLossMode::PpoClip,
        LossAggMode::TokenMean,
        KlEstimator::K3,
        (1.0, 0.05, 0.01, Some(3.0)),
    )
}
