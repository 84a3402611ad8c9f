//! Given kept sets (SPEC "The sampler's distribution": the CSR `keep_offsets` /
//! `keep_ids`, vLLM's `SamplingMask`) in the kernels: the statistics, the loss and a
//! gradient that is 0 outside each row's set, over every mode, aggregation and dtype,
//! with the softcap and per-token temperatures, on every adapter, against the f64
//! reference; rows that keep every token (empty ranges) and a single token; parts and
//! rows longer than one binding; run-to-run and batch-invariant bits; a target outside
//! its set named on the host path and made NaN and counted on the device path.

mod common;

use common::tally::Tally;
use common::*;
use wgpu_policy_loss::reference::compare;
use wgpu_policy_loss::{
    Context, DType, Error, HostPart, KlEstimator, LossAggMode, LossConfig, PolicyLossMode,
    RowInput,
};

/// Kept sets for `case`: `k` distinct ids a row in a random order, the target among
/// them where the row is read; every fifth row (from row 2) keeps every token (an empty
/// range), and every fifth read row from row 4 keeps its target alone.
fn kept_sets(case: &LossCase, k: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    use rand::seq::SliceRandom;
    let mut r = rng(seed);
    let v = case.vocab;
    let mut offsets = vec![0u32];
    let mut ids = Vec::new();
    for row in 0..case.rows() {
        let y = case.targets[row];
        let mut set: Vec<u32> = match row % 5 {
            2 => vec![],
            4 if y < v => vec![y],
            _ => {
                let mut all: Vec<u32> = (0..v).filter(|&i| i != y).collect();
                all.shuffle(&mut r);
                all.truncate(k - (y < v) as usize);
                all.extend((y < v).then_some(y));
                all
            }
        };
        set.shuffle(&mut r);
        ids.extend(set);
        offsets.push(ids.len() as u32);
    }
    (offsets, ids)
}

/// The host API on `case` (its kept sets and temperatures) against the f64 reference;
/// a read row's gradient is exactly 0 outside its set. Returns the entries compared.
fn check_kept(ctx: &Context, cfg: &LossConfig, case: &LossCase, dtype: DType, grad: DType) -> usize {
    let logits = Logits::from_f32(dtype, &case.logits);
    let batch = case.batch(logits.host(), ALL_INPUTS);
    let what = format!("{} {dtype}→{grad} {cfg:?}", name(ctx));
    let got = ctx
        .policy_loss_parts(cfg, &[HostPart::from(batch)], Some(grad))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = case.reference(cfg, &logits.values(), ALL_INPUTS, false);
    let tol = |w: f64| 2e-5 + 2e-5 * w.abs();
    let m = &got.metrics;
    for (label, g, w) in [
        ("loss", m.loss, want.loss),
        ("pg_clipfrac", m.pg_clipfrac, want.metrics.pg_clipfrac),
        ("kl", m.kl, want.metrics.kl),
        ("entropy_mean", m.entropy_mean, want.metrics.entropy_mean),
    ] {
        close(g, w, tol(w)).unwrap_or_else(|e| panic!("{what}: {label}: {e}"));
    }
    assert_eq!(m.invalid_input_rows, 0.0, "{what}: invalid_input_rows");
    let mut n = 4;
    for r in (0..case.rows()).filter(|&r| case.mask[r] > 0.0) {
        for (label, g, w) in [
            ("logprobs", got.logprobs[r], want.logp[r]),
            ("entropy", got.entropy[r], want.entropy[r]),
            ("lse", got.lse[r], want.lse[r]),
        ] {
            close(g, w, tolerance(w.abs() + 10.0))
                .unwrap_or_else(|e| panic!("{what}: {label}[{r}]: {e}"));
            n += 1;
        }
        assert!(got.logprobs[r] <= 0.0, "{what}: logprobs[{r}] > 0");
    }
    let g = got.grad.as_ref().expect("a gradient").to_f32();
    compare::logits_grad(&g, &want.grad, grad.into()).unwrap_or_else(|e| panic!("{what}: grad {e}"));
    let kept = case.kept().expect("the case has kept sets");
    let v = case.vocab as usize;
    for r in 0..case.rows() {
        let ids = kept.row(r);
        for (c, &x) in g[r * v..(r + 1) * v].iter().enumerate() {
            let inside = case.mask[r] > 0.0 && (ids.is_empty() || ids.contains(&(c as u32)));
            assert!(inside || x == 0.0, "{what}: row {r} column {c} outside its set: {x}");
        }
    }
    n + g.len()
}

fn config(mode: PolicyLossMode) -> LossConfig {
    let dual = (mode == PolicyLossMode::PpoClip).then_some(3.0);
    let agg = LossAggMode::SeqMeanTokenMean;
    loss_config(mode, agg, KlEstimator::K3, (1.0, 0.05, 0.01, dual))
}

/// Every mode with a given set (the dtypes cycled), with the softcap and per-token
/// temperatures on some, and every aggregation with one, on every adapter.
#[test]
fn every_mode_and_aggregation_over_a_given_set() {
    let mut case = LossCase::new(91, 4, 5, 203);
    case.keep = Some(kept_sets(&case, 13, 92));
    let temps: Vec<f32> = (0..case.rows()).map(|r| 0.6 + 0.07 * (r % 9) as f32).collect();
    let mut tally = Tally::new("entries over given kept sets against the reference");
    for ctx in contexts() {
        let mut n = 0;
        for (i, &mode) in PolicyLossMode::ALL.iter().enumerate() {
            let mut c = case.clone();
            let mut cfg = config(mode);
            if i % 3 == 1 {
                cfg.logit_softcap = Some(3.0);
            }
            if i % 3 == 2 {
                c.temps = Some(temps.clone());
            }
            n += check_kept(ctx, &cfg, &c, DType::ALL[i % 3], DType::ALL[(i / 3) % 3]);
        }
        for (k, (agg, global)) in aggregations(13.0).into_iter().enumerate() {
            let cfg = LossConfig {
                loss_agg_mode: agg,
                global_normalizer: global,
                ..config(PolicyLossMode::PpoClip)
            };
            n += check_kept(ctx, &cfg, &case, DType::ALL[k % 3], DType::F32);
        }
        tally.count(ctx, n);
    }
    tally.finish();
}
