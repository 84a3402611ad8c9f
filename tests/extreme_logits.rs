//! The row kernels' rare paths through the policy loss, against the f64 reference on
//! every adapter and path: rows of huge finite logits (up to ±FLT_MAX, where
//! x·log2(e)/τ overflows and the sweeps take their exact loops), ±1e4, and −inf entries
//! (a masked vocabulary, which the statistics sweep's hot loop hands to the exact one),
//! in every dtype the values survive, with the gradient in place and apart.

mod common;

use common::*;
use wgpu_policy_loss::{Context, DType, KlEstimator, LossAggMode, LossConfig, PolicyLossMode};

/// Row r of `case` (V columns) set to `f(v)`, and its target to `y`.
fn set_row(case: &mut LossCase, r: usize, y: u32, f: impl Fn(usize) -> f32) {
    let v = case.vocab as usize;
    for (j, x) in case.logits[r * v..(r + 1) * v].iter_mut().enumerate() {
        *x = f(j);
    }
    case.targets[r] = y;
}

/// A row's target and the value of each of its logits.
type Row = (u32, fn(usize) -> f32);

/// The vocabularies: V = 41 (five groups of eight and a partial one, rows anywhere, one
/// element at a time) and V = 48 (rows on group boundaries: eight in 16-byte loads).
const VOCABS: [u32; 2] = [41, 48];

/// Rows 0, 1, 2 (masked in) and 4 (masked out) of a 2 × 4 case of `vocab` columns,
/// given the rows' values.
fn case_with(vocab: u32, rows: [Row; 4]) -> LossCase {
    let mut case = LossCase::new(31, 2, 4, vocab);
    for (&r, (y, f)) in [0usize, 1, 2, 4].iter().zip(rows) {
        set_row(&mut case, r, y, f);
    }
    case
}

/// Every adapter, in its own lane layout and in the other one (the layout GPUs run, on
/// CI's CPU adapters): the exact loops differ between them.
fn both_layouts() -> Vec<Context> {
    contexts()
        .iter()
        .flat_map(|c| [c.clone(), c.with_lane_blocks(!c.lane_blocks())])
        .collect()
}

fn run(case: &LossCase, cfg: &LossConfig, dtypes: &[DType]) {
    for ctx in &both_layouts() {
        for &dtype in dtypes {
            for grad in [Some(DType::F32), Some(dtype)] {
                check_loss(ctx, cfg, case, dtype, grad, ALL_INPUTS);
            }
        }
    }
}

/// Logits near FLT_MAX: the hot loops' base-2 scaling overflows and the exact loops
/// take over. The statistics, the loss and the metrics are the reference's; the
/// gradient is finite (its p = e^(z − lse) cannot be exact there in any f32 formula:
/// lse = m + ln s rounds to m, as the old kernels' did).
#[test]
fn logits_near_flt_max() {
    for vocab in VOCABS {
        near_flt_max(vocab);
    }
}

fn near_flt_max(vocab: u32) {
    let case = case_with(
        vocab,
        [
            (0, |j| if j % 3 == 0 { f32::MAX } else { -f32::MAX }),
            (40, |j| f32::MAX * (0.5 + (j % 41) as f32 / 82.0)),
            (7, |j| if j == 7 { 3e38 } else { 1e38 }),
            (2, |j| -3e38 + j as f32 * 1e36),
        ],
    );
    let cfg = loss_config(
        PolicyLossMode::PpoClip,
        LossAggMode::TokenMean,
        KlEstimator::K2,
        (1.0, 0.1, 0.0, None),
    );
    let logits = Logits::from_f32(DType::F32, &case.logits);
    let want = case.reference(&cfg, &logits.values(), ALL_INPUTS, false);
    for ctx in &both_layouts() {
        let what = format!("{} V = {vocab}", name(ctx));
        let batch = case.batch(logits.host(), ALL_INPUTS);
        let got = ctx.policy_loss(&cfg, &batch, Some(DType::F32)).unwrap();
        let m = &got.metrics;
        for (label, g, w) in [
            ("loss", m.loss, want.loss),
            ("kl", m.kl, want.metrics.kl),
            ("entropy_mean", m.entropy_mean, want.metrics.entropy_mean),
        ] {
            close(g, w, 2e-5 + 2e-5 * w.abs()).unwrap_or_else(|e| panic!("{what}: {label}: {e}"));
        }
        for r in (0..case.rows()).filter(|&r| case.mask[r] > 0.0) {
            let tol = tolerance(want.logp[r].abs() + 10.0);
            close(got.logprobs[r], want.logp[r], tol)
                .unwrap_or_else(|e| panic!("{what}: logprobs[{r}]: {e}"));
            close(got.entropy[r], want.entropy[r], tolerance(10.0))
                .unwrap_or_else(|e| panic!("{what}: entropy[{r}]: {e}"));
        }
        let g = got.grad.unwrap().to_f32();
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{what}: a gradient not finite"
        );
    }
}

/// ±1e4 (exp overflows without the shift) and −inf entries, with temperature, the
/// entropy bonus and the KL term, in every dtype.
#[test]
fn large_and_minus_inf_logits() {
    for vocab in VOCABS {
        large_and_minus_inf_at(vocab);
    }
}

fn large_and_minus_inf_at(vocab: u32) {
    let case = case_with(
        vocab,
        [
            (3, |j| if j % 3 == 0 { 1e4 } else { -1e4 }),
            (17, |j| if j == 17 { 1e4 } else { -1e4 + j as f32 }),
            (35, |j| {
                if j < 30 {
                    f32::NEG_INFINITY
                } else {
                    j as f32 * 0.1
                }
            }),
            (40, |j| if j % 2 == 1 { f32::NEG_INFINITY } else { 0.5 }),
        ],
    );
    for mode in [PolicyLossMode::Reinforce, PolicyLossMode::PpoClip] {
        let cfg = loss_config(
            mode,
            LossAggMode::SeqMeanTokenMean,
            KlEstimator::K3,
            (0.7, 0.2, 0.03, Some(3.0)),
        );
        run(&case, &cfg, &[DType::F32, DType::F16, DType::Bf16]);
    }
}
