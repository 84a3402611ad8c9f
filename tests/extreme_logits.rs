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
/// take over. The statistics, the loss and the metrics are the reference's; of the
/// gradient, what its formula keeps there (`near_flt_max_gradient`).
#[test]
fn logits_near_flt_max() {
    let mut tally = Tally::new("gradient entries near FLT_MAX (nonzero in the reference)");
    for vocab in VOCABS {
        near_flt_max(vocab, &mut tally);
    }
    tally.finish();
}

fn near_flt_max(vocab: u32, tally: &mut Tally) {
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
        let n = near_flt_max_gradient(&what, &case, &g, &want.grad);
        tally.count(ctx, n);
    }
}

/// The gradient of rows near FLT_MAX against the reference's. The row gradient of
/// docs/MATH.md#gradient-with-respect-to-the-logits is (w/τ)·G·(1[v = y] − p_v) here
/// (γ = 0); the kernel's exact loop computes p̂_v = e^(z_v − lse) with lse one f32. At
/// these magnitudes (|x| ≥ 1e38) two distinct f32 logits are at least an ulp (2^103)
/// apart, so every p_v is 0 or 1/k for the k entries tied at the row's maximum m, and
/// lse = m + ln k rounds to m: the kernel gives each tied entry p̂ = 1, k times the
/// reference's 1/k. So the row's sum, which the exact p makes 0, is (w/τ)·G·(1 − k) on
/// a row of ties, and the target's entry is 0 where it should be (w/τ)·G·(1 − 1/k):
/// neither is checked. What the formula does keep, and is checked, element by element:
/// - where the reference's entry is exactly 0 (p = 0, or a lone maximum at the target,
///   whose 1 − p underflows), the kernel's is exactly 0;
/// - a nonzero non-target entry has the reference's sign, and is the reference's times
///   one factor c = e^(lse_ref − lse) per row (the same p̂/p for every entry), with
///   0 < c ≤ V (lse ≥ m: p̂ ≤ 1, and p ≥ 1/V at the maximum);
/// - the target's entry is finite and has the reference's sign or is 0 (p̂_y ≤ 1);
/// - the one-hot term: the target's entry minus that of an entry with the same logit
///   (the same p̂) is (w/τ)·G, exactly the formula's difference, to f32 rounding of G.
///
/// Returns the number of entries compared whose reference is nonzero (an all-zero
/// gradient fails the second and fourth checks).
fn near_flt_max_gradient(what: &str, case: &LossCase, got: &[f32], want: &[f64]) -> usize {
    let v = case.vocab as usize;
    let mut nonzero = 0;
    for r in 0..case.rows() {
        let (g, w, x) = (
            &got[r * v..(r + 1) * v],
            &want[r * v..(r + 1) * v],
            &case.logits[r * v..(r + 1) * v],
        );
        let y = case.targets[r] as usize;
        let at = |j: usize| format!("{what}: grad[{r}, {j}] = {}, want {}", g[j], w[j]);
        let mut factor: Option<f64> = None;
        for j in 0..v {
            let (gj, wj) = (g[j] as f64, w[j]);
            if wj == 0.0 {
                assert!(gj == 0.0, "{}: must be 0 exactly", at(j));
                continue;
            }
            nonzero += 1;
            if j == y {
                assert!(gj.is_finite() && gj * wj >= 0.0, "{}: sign", at(j));
                continue;
            }
            let c = gj / wj;
            assert!(c > 0.0 && c <= v as f64, "{}: factor {c}", at(j));
            // one product p̂·c0 in f32 per entry: the factors agree to a few ulps
            let c0 = *factor.get_or_insert(c);
            assert!(
                (c - c0).abs() <= 1e-6 * c0,
                "{}: factor {c}, {c0} elsewhere in the row",
                at(j)
            );
        }
        for j in (0..v).filter(|&j| j != y && y < v && x[j] == x[y] && w[y] != w[j]) {
            let (d, dw) = ((g[y] - g[j]) as f64, w[y] - w[j]);
            // G from the log-prob, the KL and the clip in f32: the loss's tolerance
            let tol = 2e-5 * dw.abs() + 1e-30;
            assert!(
                (d - dw).abs() <= tol,
                "{what}: row {r}: grad[y = {y}] − grad[{j}] = {d}, want {dw} (w/τ·G)"
            );
            nonzero += 1;
        }
    }
    nonzero
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
