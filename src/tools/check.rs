//! The cross-vendor correctness check (the CLI's `check`, and the web page's button):
//! every logits dtype and loss mode, several shapes, the options cycled, each case
//! against the f64 CPU reference with the test suite's tolerances. Deterministic data,
//! so every machine checks the same numbers.

use crate::half::{bf16, f16};
use crate::reference::{self, compare, Batch};
use crate::{
    Context, DType, Error, HostBatch, HostLogits, KlEstimator, LossAggMode, LossConfig,
    PolicyLossMode, RolloutCorrection, RolloutLevel, RolloutMode,
};

/// (sequences, rows per sequence, vocab): odd and aligned vocabularies, a large one.
pub const SHAPES: [(u32, u32, u32); 3] = [(3, 5, 33), (2, 4, 4100), (1, 3, 151_936)];

/// The tolerances of the test suite: the loss relative to (1 + |loss|), log-probs
/// absolute; the gradient by [`compare::logits_grad`]'s rule.
pub const LOSS_TOL: f64 = 2e-5;
pub const LOGP_TOL: f64 = 1e-4;

/// The tolerances in words, for the CLI's and the web page's tables.
pub fn tolerances() -> String {
    format!(
        "loss {LOSS_TOL:.0e}·(1+|loss|), log-prob {LOGP_TOL:.0e}, gradient per element \
         {:.0e}·|ref| + {:.1e}·max|ref| (+ one ulp of a 16-bit gradient, + the reference's \
         own move under the log-prob's and the coefficients' f32 errors); grad/bound is \
         the largest error as a share of its bound",
        compare::F32_REL,
        compare::OF_MAX
    )
}

/// A small deterministic generator (uniform in [0, 1)), so that every machine checks
/// the same numbers; also the browser suite's, which has no `rand`.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The largest errors over a set of cases (NaN when one was), and how many failed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Worst {
    pub loss: f64,
    pub logp: f64,
    /// The gradient's largest error as a share of its bound (≤ 1 holds).
    pub grad: f64,
    pub cases: usize,
    pub failed: usize,
}

/// The options a case adds to its mode: none, the top-entropy mask (the quantile or the
/// renormalised top-k), a rollout correction, or one of the 2026 matrix's (TRL's
/// two-sided δ, the sequence-level ratio, the off-policy mask, the bias-corrected KL).
/// An option a mode does not take leaves the case plain.
#[derive(Clone, Copy, Debug)]
pub enum Extra {
    Plain,
    EntropyQuantile,
    EntropyTopK,
    Rollout(RolloutLevel, RolloutMode),
    Delta,
    SequenceLevel,
    OffPolicy,
    BiasCorrectedKl,
}

pub const OPTIONS: [Extra; 10] = [
    Extra::Plain,
    Extra::EntropyQuantile,
    Extra::EntropyTopK,
    Extra::Rollout(RolloutLevel::Token, RolloutMode::Truncate),
    Extra::Rollout(RolloutLevel::Sequence, RolloutMode::Mask),
    Extra::Rollout(RolloutLevel::Geometric, RolloutMode::Truncate),
    Extra::Delta,
    Extra::SequenceLevel,
    Extra::OffPolicy,
    Extra::BiasCorrectedKl,
];

impl Extra {
    /// `c` with the option, where its mode takes it (LossConfig::validate's rules).
    fn apply(self, c: LossConfig) -> LossConfig {
        let with = match self {
            Extra::Delta => LossConfig {
                delta: Some(1.5),
                clip_ratio_c: None,
                ..c
            },
            Extra::SequenceLevel => LossConfig {
                importance_sampling_level: crate::ImportanceSamplingLevel::Sequence,
                ..c
            },
            Extra::OffPolicy => LossConfig {
                off_policy_mask_threshold: Some(0.05),
                ..c
            },
            Extra::BiasCorrectedKl => LossConfig {
                use_bias_correction_kl: true,
                ..c
            },
            other => other.apply_2025(c),
        };
        if with.validate().is_ok() {
            with
        } else {
            c
        }
    }

    fn apply_2025(self, c: LossConfig) -> LossConfig {
        match self {
            Extra::EntropyQuantile => LossConfig {
                top_entropy_quantile: Some(0.5),
                ..c
            },
            Extra::EntropyTopK => LossConfig {
                top_entropy_quantile: Some(0.4),
                top_entropy_renormalize: true,
                ..c
            },
            Extra::Rollout(level, mode) => LossConfig {
                rollout_correction: Some(RolloutCorrection {
                    threshold: 1.5,
                    ..RolloutCorrection::new(level, mode)
                }),
                ..c
            },
            _ => c,
        }
    }
}

/// One case of the check: its mode, option, dtype, shape and seed.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub mode: PolicyLossMode,
    pub option: Extra,
    pub dtype: DType,
    pub shape: (u32, u32, u32),
    pub seed: u64,
}

/// The cases of one dtype: every shape × mode, the options cycled.
pub fn cases(dtype: DType) -> Vec<Case> {
    let mut out = Vec::new();
    for (i, &shape) in SHAPES.iter().enumerate() {
        for (j, mode) in PolicyLossMode::ALL.into_iter().enumerate() {
            out.push(Case {
                mode,
                option: OPTIONS[(i * PolicyLossMode::ALL.len() + j) % OPTIONS.len()],
                dtype,
                shape,
                seed: (i * 3 + j) as u64 + 1,
            });
        }
    }
    out
}

/// Runs `case` on `ctx` into `worst`; `Ok(Some(why))` when it is out of tolerance.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_case(ctx: &Context, case: &Case, worst: &mut Worst) -> Result<Option<String>, Error> {
    pollster::block_on(run_case_async(ctx, case, worst))
}

/// [`run_case`] without blocking (the browser's form).
pub async fn run_case_async(
    ctx: &Context,
    case: &Case,
    worst: &mut Worst,
) -> Result<Option<String>, Error> {
    let Case {
        mode,
        option,
        dtype,
        shape,
        seed,
    } = *case;
    run_one(ctx, mode, option, dtype, shape, seed, worst).await
}

async fn run_one(
    ctx: &Context,
    mode: PolicyLossMode,
    option: Extra,
    dtype: DType,
    shape: (u32, u32, u32),
    seed: u64,
    worst: &mut Worst,
) -> Result<Option<String>, Error> {
    let (_, rps, vocab) = shape;
    let data = CaseData::new(dtype, shape, seed);
    let config = case_config(mode, option);
    let logits = match &data.logits {
        Stored::F32(x) => HostLogits::F32(x),
        Stored::F16(x) => HostLogits::F16(x),
        Stored::Bf16(x) => HostLogits::Bf16(x),
    };
    let batch = HostBatch {
        kept: None,
        temperatures: None,
        logits,
        vocab,
        rows_per_seq: Some(rps),
        targets: &data.targets,
        mask: &data.mask,
        advantages: &data.adv,
        old_logprobs: Some(&data.old),
        ref_logprobs: Some(&data.refp),
    };
    let got = ctx
        .policy_loss_parts_async(
            &config,
            &[batch.with_rollout_logprobs(&data.rollout)],
            Some(dtype),
        )
        .await?;
    let f = |a: &[f32]| a.iter().map(|&b| b as f64).collect::<Vec<_>>();
    let (mask, adv, old, refp, rollout) = (
        f(&data.mask),
        f(&data.adv),
        f(&data.old),
        f(&data.refp),
        f(&data.rollout),
    );
    let batch = Batch {
        logits: &data.exact,
        vocab: vocab as usize,
        rows_per_seq: rps as usize,
        targets: &data.targets,
        mask: &mask,
        advantages: &adv,
        old_logp: Some(&old),
        ref_logp: Some(&refp),
    };
    let want = reference::policy_loss_with(&config, &batch, Some(&rollout))?;
    let sensitivity = compare::grad_sensitivity(&config, &batch, Some(&rollout))?;
    let e = Errors::of(&got, &want, &data.mask, &sensitivity);
    worst.loss = compare::max_err(worst.loss, e.loss);
    worst.logp = compare::max_err(worst.logp, e.logp);
    worst.grad = compare::max_err(worst.grad, e.grad_share());
    worst.cases += 1;
    if !e.pass() {
        worst.failed += 1;
        return Ok(Some(format!("{mode:?} {option:?} {dtype} {shape:?}: {e}")));
    }
    Ok(None)
}

/// The logits of a case in their dtype.
enum Stored {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

/// A case's inputs, drawn from its seed: logits (and their exact f64 values), ids, a
/// mask with every fourth row out, advantages, old and ref log-probs near the current
/// ones, and the sampler's (junk where the mask is 0).
struct CaseData {
    logits: Stored,
    exact: Vec<f64>,
    targets: Vec<u32>,
    mask: Vec<f32>,
    adv: Vec<f32>,
    old: Vec<f32>,
    refp: Vec<f32>,
    rollout: Vec<f32>,
}

impl CaseData {
    fn new(dtype: DType, (seqs, rps, vocab): (u32, u32, u32), seed: u64) -> Self {
        let rows = (seqs * rps) as usize;
        let v = vocab as usize;
        let mut rng = Lcg(seed);
        let x: Vec<f32> = (0..rows * v)
            .map(|_| (rng.uniform() as f32 - 0.5) * 8.0)
            .collect();
        let (logits, exact): (Stored, Vec<f64>) = match dtype {
            DType::F32 => {
                let exact = x.iter().map(|&a| a as f64).collect();
                (Stored::F32(x), exact)
            }
            DType::F16 => {
                let h: Vec<f16> = x.iter().map(|&a| f16::from_f32(a)).collect();
                let exact = h.iter().map(|h| h.to_f64()).collect();
                (Stored::F16(h), exact)
            }
            DType::Bf16 => {
                let h: Vec<bf16> = x.iter().map(|&a| bf16::from_f32(a)).collect();
                let exact = h.iter().map(|h| h.to_f64()).collect();
                (Stored::Bf16(h), exact)
            }
        };
        let targets: Vec<u32> = (0..rows)
            .map(|_| (rng.uniform() * v as f64) as u32 % vocab)
            .collect();
        let mask: Vec<f32> = (0..rows)
            .map(|r| if r % 4 == 3 { 0.0 } else { 1.0 })
            .collect();
        let adv: Vec<f32> = (0..seqs)
            .map(|_| (rng.uniform() as f32 - 0.5) * 3.0)
            .collect();
        let cur: Vec<f64> = (0..rows)
            .map(|r| {
                let row = &exact[r * v..(r + 1) * v];
                reference::row_stats(row, targets[r] as usize, 0.9).logp
            })
            .collect();
        let old: Vec<f32> = cur
            .iter()
            .map(|&l| (l + (rng.uniform() - 0.5) * 0.8) as f32)
            .collect();
        let refp: Vec<f32> = old
            .iter()
            .map(|&o| o + (rng.uniform() as f32 - 0.5) * 0.4)
            .collect();
        let rollout: Vec<f32> = old
            .iter()
            .zip(&mask)
            .map(|(&o, &m)| {
                if m > 0.0 {
                    o + (rng.uniform() as f32 - 0.5) * 1.2
                } else {
                    f32::NAN
                }
            })
            .collect();
        CaseData {
            logits,
            exact,
            targets,
            mask,
            adv,
            old,
            refp,
            rollout,
        }
    }
}

/// The configuration every case shares, with its mode and option.
fn case_config(mode: PolicyLossMode, option: Extra) -> LossConfig {
    option.apply(LossConfig {
        mode,
        dro_beta: Some(0.3),
        kl_loss_type: KlEstimator::K3,
        kl_coef: 0.05,
        entropy_coeff: 0.01,
        loss_agg_mode: LossAggMode::SeqMeanTokenMean,
        temperature: 0.9,
        clip_ratio_c: Some(3.0),
        kl_cov_ratio: 0.2,
        clip_cov_ratio: 0.3,
        clip_cov_lb: -5.0,
        clip_cov_ub: 5.0,
        ..LossConfig::default()
    })
}

/// A case's errors: the loss's relative to (1 + |loss|), the masked-in rows' largest
/// of the log-prob's and the lse's (NaN when one is NaN: the reference's are finite
/// here; lse = z_y − logp carries the log-prob's error), and the gradient's
/// comparison ([`compare::logits_grad_with`], with the reference's sensitivity to the
/// log-prob's error).
#[derive(Clone, Debug)]
pub struct Errors {
    pub loss: f64,
    pub logp: f64,
    pub grad: Result<compare::Comparison, compare::Mismatch>,
}

impl Errors {
    pub fn of(
        got: &crate::HostLoss,
        want: &reference::LossOutput,
        mask: &[f32],
        sensitivity: &[f64],
    ) -> Errors {
        let loss = (got.metrics.loss as f64 - want.loss).abs() / (1.0 + want.loss.abs());
        let logp = (0..mask.len())
            .filter(|&r| mask[r] > 0.0)
            .flat_map(|r| {
                [
                    (got.logprobs[r] as f64 - want.logp[r]).abs(),
                    (got.lse[r] as f64 - want.lse[r]).abs(),
                ]
            })
            .fold(0.0, compare::max_err);
        let grad = match &got.grad {
            Some(g) => {
                compare::logits_grad_with(&g.to_f32(), &want.grad, g.dtype.into(), sensitivity)
            }
            None => Err(compare::Mismatch::Length {
                got: 0,
                want: want.grad.len(),
            }),
        };
        Errors { loss, logp, grad }
    }

    /// The gradient's largest error as a share of its bound; NaN when it failed.
    pub fn grad_share(&self) -> f64 {
        match &self.grad {
            Ok(c) => c.share(),
            Err(_) => f64::NAN,
        }
    }

    /// Within the tolerances (a NaN error is not).
    pub fn pass(&self) -> bool {
        self.loss <= LOSS_TOL && self.logp <= LOGP_TOL && self.grad.is_ok()
    }
}

impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loss {:.1e} logp {:.1e} grad ", self.loss, self.logp)?;
        match &self.grad {
            Ok(_) => write!(f, "{:.1e} of its bound", self.grad_share()),
            Err(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's own result, narrowed to f32 as a device would return it.
    fn as_device(want: &reference::LossOutput) -> crate::HostLoss {
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        crate::HostLoss {
            metrics: crate::Metrics {
                loss: want.loss as f32,
                ..Default::default()
            },
            logprobs: f(&want.logp),
            entropy: f(&want.entropy),
            lse: f(&want.lse),
            grad: Some(crate::HostGrad {
                dtype: DType::F32,
                bytes: bytemuck::cast_slice(&f(&want.grad)).to_vec(),
            }),
        }
    }

    #[test]
    fn a_nan_or_inf_in_any_compared_output_fails_the_case() {
        let data = CaseData::new(DType::F32, (2, 4, 33), 3);
        let f = |a: &[f32]| a.iter().map(|&b| b as f64).collect::<Vec<_>>();
        let config = case_config(PolicyLossMode::PpoClip, Extra::Plain);
        let want = reference::policy_loss(
            &config,
            &Batch {
                logits: &data.exact,
                vocab: 33,
                rows_per_seq: 4,
                targets: &data.targets,
                mask: &f(&data.mask),
                advantages: &f(&data.adv),
                old_logp: Some(&f(&data.old)),
                ref_logp: Some(&f(&data.refp)),
            },
        )
        .unwrap();
        let good = as_device(&want);
        let none = vec![0.0; want.grad.len()];
        assert!(Errors::of(&good, &want, &data.mask, &none).pass());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut got = good.clone();
            got.metrics.loss = bad;
            assert!(
                !Errors::of(&got, &want, &data.mask, &none).pass(),
                "loss {bad}"
            );
            // row 0 is masked in (every fourth row is out)
            let mut got = good.clone();
            got.logprobs[0] = bad;
            let e = Errors::of(&got, &want, &data.mask, &none);
            assert!(
                !e.pass() && (e.logp.is_nan() || e.logp > LOGP_TOL),
                "log-prob {bad}: {e}"
            );
            let mut got = good.clone();
            got.lse[0] = bad;
            let e = Errors::of(&got, &want, &data.mask, &none);
            assert!(!e.pass(), "lse {bad}: {e}");
            let mut got = good.clone();
            let mut g = got.grad.as_ref().unwrap().to_f32();
            g[40] = bad;
            got.grad.as_mut().unwrap().bytes = bytemuck::cast_slice(&g).to_vec();
            let e = Errors::of(&got, &want, &data.mask, &none);
            assert!(!e.pass() && e.grad_share().is_nan(), "gradient {bad}: {e}");
        }
        // the worst over cases keeps a NaN
        let mut worst = Worst::default();
        for x in [1e-6, f64::NAN, 2e-6] {
            worst.logp = compare::max_err(worst.logp, x);
        }
        assert!(worst.logp.is_nan());
    }
}
