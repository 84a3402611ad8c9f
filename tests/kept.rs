//! Given kept sets (docs/MATH.md#given-kept-sets: the CSR `keep_offsets` /
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
    Context, DType, Error, HostPart, KlEstimator, LossAggMode, LossConfig, PolicyLossMode, RowInput,
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
fn check_kept(
    ctx: &Context,
    cfg: &LossConfig,
    case: &LossCase,
    dtype: DType,
    grad: DType,
) -> usize {
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
    compare::logits_grad(&g, &want.grad, grad.into())
        .unwrap_or_else(|e| panic!("{what}: grad {e}"));
    let kept = case.kept().expect("the case has kept sets");
    let v = case.vocab as usize;
    for r in 0..case.rows() {
        let ids = kept.row(r);
        for (c, &x) in g[r * v..(r + 1) * v].iter().enumerate() {
            let inside = case.mask[r] > 0.0 && (ids.is_empty() || ids.contains(&(c as u32)));
            assert!(
                inside || x == 0.0,
                "{what}: row {r} column {c} outside its set: {x}"
            );
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
    let temps: Vec<f32> = (0..case.rows())
        .map(|r| 0.6 + 0.07 * (r % 9) as f32)
        .collect();
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

/// The same bits whatever the batching: one part and two, run twice, softcap and
/// per-token temperatures on.
#[test]
fn the_same_bits_in_parts_and_run_to_run() {
    let mut case = LossCase::new(93, 4, 3, 97);
    case.keep = Some(kept_sets(&case, 9, 94));
    case.temps = Some((0..case.rows()).map(|r| 0.7 + 0.05 * r as f32).collect());
    let cfg = LossConfig {
        logit_softcap: Some(3.0),
        ..config(PolicyLossMode::PpoClip)
    };
    let logits = Logits::from_f32(DType::Bf16, &case.logits);
    let (rows, v) = (6, case.vocab as usize);
    let halves = [
        Logits::from_f32(DType::Bf16, &case.logits[..rows * v]),
        Logits::from_f32(DType::Bf16, &case.logits[rows * v..]),
    ];
    let (offsets, ids) = case.keep.clone().expect("kept sets");
    // each half's CSR, its offsets from 0
    let half = |r0: usize, r1: usize| -> (Vec<u32>, Vec<u32>) {
        let base = offsets[r0];
        let o = offsets[r0..=r1].iter().map(|&x| x - base).collect();
        (o, ids[base as usize..offsets[r1] as usize].to_vec())
    };
    let csr = [half(0, rows), half(rows, 2 * rows)];
    let temps = case.temps.clone().expect("temperatures");
    let mut tally = Tally::new("runs bitwise equal across parts and repeats");
    for ctx in contexts() {
        let whole = case.batch(logits.host(), ALL_INPUTS);
        let run = |parts: &[HostPart<'_>]| {
            ctx.policy_loss_parts(&cfg, parts, Some(DType::Bf16))
                .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)))
        };
        let one = run(&[whole.into()]);
        assert!(
            same_bits(&one, &run(&[whole.into()])),
            "{}: run to run",
            name(ctx)
        );
        let split = |h: usize, r0: usize, r1: usize, s0: usize, s1: usize| {
            let mut b = case.rows_of(whole, halves[h].host(), (r0, r1, s0, s1), Some(&temps));
            b.kept = Some(wgpu_policy_loss::reference::sampler::KeptSets {
                offsets: &csr[h].0,
                ids: &csr[h].1,
            });
            HostPart::from(b)
        };
        let parts = run(&[split(0, 0, rows, 0, 2), split(1, rows, 2 * rows, 2, 4)]);
        assert!(
            same_bits(&one, &parts),
            "{}: one part against two",
            name(ctx)
        );
        tally.count(ctx, 3);
    }
    tally.finish();
}

/// Rows longer than one binding: every column block keeps the ids in its columns, the
/// partials merge over the kept ids, and each block scatters its own.
#[test]
fn rows_longer_than_one_binding() {
    let mut tally = Tally::new("split rows over given kept sets");
    for full in opened() {
        let a = full.adapter().expect("opened on an adapter");
        let limits = wgpu_policy_loss::wgpu::Limits {
            max_storage_buffer_binding_size: 1 << 18,
            ..a.limits()
        };
        let small = Context::from_adapter_with_limits(a, limits)
            .unwrap_or_else(|e| panic!("{}: {e}", name(&full)));
        let mut case = LossCase::new(95, 2, 3, 150_000);
        case.targets[0] = case.vocab - 1;
        case.keep = Some(kept_sets(&case, 300, 96));
        for mode in [PolicyLossMode::PpoClip, PolicyLossMode::Gspo] {
            let cfg = LossConfig {
                logit_softcap: Some(3.0),
                ..config(mode)
            };
            check_loss(
                &small,
                &cfg,
                &case,
                DType::F32,
                Some(DType::F32),
                ALL_INPUTS,
            );
            tally.count(&small, 1);
        }
    }
    tally.finish();
}

/// The metrics of the device path (no host check) over `keep`.
fn device_metrics(
    ctx: &Context,
    cfg: &LossConfig,
    case: &LossCase,
    (offsets, ids): (&[u32], &[u32]),
) -> wgpu_policy_loss::Metrics {
    use wgpu_policy_loss::{
        Advantages, F32View, Gradient, KeptView, LogitsView, LossInputs, TargetsView,
    };
    let rows = case.rows() as u32;
    let x = ctx.upload("logits", bytemuck::cast_slice(&case.logits));
    let b = case.upload_rows(ctx);
    let o = ctx.upload("keep_offsets", bytemuck::cast_slice(offsets));
    let i = ctx.upload("keep_ids", bytemuck::cast_slice(ids));
    let logits = LogitsView::new(&x, DType::F32, rows, case.vocab)
        .with_sequences(case.rows_per_seq, (case.rows_per_seq * case.vocab) as u64);
    let inputs = LossInputs::new(
        logits,
        TargetsView::new(&b.targets),
        F32View::new(&b.mask),
        Advantages::PerSequence(F32View::new(&b.adv_seq)),
    )
    .with_old_logprobs(F32View::new(&b.old))
    .with_ref_logprobs(F32View::new(&b.refp))
    .with_kept(KeptView::new(&o, &i, ids.len() as u32));
    record_and_read(ctx, *cfg, &inputs, Gradient::InPlace, &[]).0
}

/// Bad input (docs/MATH.md#bad-input): a read row's target outside its set names
/// `targets` and the row on the host path, and is made NaN and counted on the device
/// path (where offsets past the ids are clamped, never read out of bounds); the CSR's
/// shape names `keep_offsets`, a bad id `keep_ids`, a computed option beside a given
/// set `keep_offsets`. Unread rows' targets are never checked.
#[test]
fn bad_kept_sets_are_named() {
    let mut case = LossCase::new(97, 2, 4, 31);
    case.keep = Some(kept_sets(&case, 5, 98));
    let (offsets, ids) = case.keep.clone().expect("kept sets");
    let logits = Logits::from_f32(DType::F32, &case.logits);
    let cfg = config(PolicyLossMode::PpoClip);
    let row = 1;
    assert!(case.mask[row] > 0.0 && row % 5 != 2);
    let mut tally = Tally::new("bad kept sets named or counted");
    for ctx in contexts() {
        // the row's target replaced by an id outside its set
        let mut c = case.clone();
        let set = &ids[offsets[row] as usize..offsets[row + 1] as usize];
        c.targets[row] = (0..c.vocab).find(|i| !set.contains(i)).expect("a free id");
        let batch = c.batch(logits.host(), ALL_INPUTS);
        match ctx.policy_loss(&cfg, &batch, Some(DType::F32)) {
            Err(Error::InvalidInput {
                tensor: RowInput::Targets,
                row: r,
                value,
            }) => {
                assert_eq!(r, row, "{}: the first bad row", name(ctx));
                assert_eq!(value, c.targets[row] as f32, "{}: the id", name(ctx));
            }
            other => panic!("{}: {other:?}", name(ctx)),
        }
        let m = device_metrics(ctx, &cfg, &c, (&offsets, &ids));
        assert_eq!(m.invalid_input_rows, 1.0, "{}", name(ctx));
        let first = m.invalid_input.expect("the first bad row");
        assert_eq!((first.tensor, first.row), (RowInput::Targets, row as u32));
        assert!(m.loss.is_nan(), "{}: the loss is NaN", name(ctx));
        // offsets past the ids (the caller's word on the device): clamped, no fault
        let mut wild = offsets.clone();
        *wild.last_mut().expect("offsets") = u32::MAX;
        wild[row + 1] = 1 << 30;
        let m = device_metrics(ctx, &cfg, &case, (&wild, &ids));
        assert!(m.loss.is_finite() || m.loss.is_nan(), "{}", name(ctx));
        // host-side shape and id checks
        let mut b = case.batch(logits.host(), ALL_INPUTS);
        let short = &offsets[..offsets.len() - 1];
        b.kept = Some(wgpu_policy_loss::reference::sampler::KeptSets {
            offsets: short,
            ids: &ids,
        });
        assert_arg(ctx.policy_loss(&cfg, &b, None), "keep_offsets");
        let mut twice = ids.clone();
        twice[1] = twice[0];
        b.kept = Some(wgpu_policy_loss::reference::sampler::KeptSets {
            offsets: &offsets,
            ids: &twice,
        });
        assert_arg(ctx.policy_loss(&cfg, &b, None), "keep_ids");
        let mut outside = ids.clone();
        outside[0] = case.vocab;
        b.kept = Some(wgpu_policy_loss::reference::sampler::KeptSets {
            offsets: &offsets,
            ids: &outside,
        });
        assert_arg(ctx.policy_loss(&cfg, &b, None), "keep_ids");
        let b = case.batch(logits.host(), ALL_INPUTS);
        for top in [
            LossConfig { top_k: 5, ..cfg },
            LossConfig { top_p: 0.9, ..cfg },
            LossConfig { min_p: 0.1, ..cfg },
        ] {
            assert_arg(ctx.policy_loss(&top, &b, None), "keep_offsets");
        }
        tally.count(ctx, 9);
    }
    tally.finish();
}

/// The fused head over given kept sets: the chunk's statistics over the kept ids, and
/// ∂h and ∂W through them; chunks that do not divide the rows; a mode whose statistics
/// come first (GSPO).
#[test]
fn the_head_over_a_given_set() {
    use common::head::{check_head, ppo, HeadCase};
    let mut tally = Tally::new("head calls over given kept sets");
    for ctx in contexts() {
        for (k, dtype) in [DType::F32, DType::Bf16].into_iter().enumerate() {
            let mut hc = HeadCase::new(99 + k as u64, (3, 5, 143, 24), dtype);
            hc.case.keep = Some(kept_sets(&hc.case, 11, 100));
            if k == 1 {
                hc.case.temps = Some((0..hc.case.rows()).map(|r| 0.8 + 0.03 * r as f32).collect());
            }
            for mode in [PolicyLossMode::PpoClip, PolicyLossMode::Gspo] {
                let cfg = LossConfig {
                    mode,
                    logit_softcap: (k == 0).then_some(4.0),
                    ..ppo()
                };
                for chunk in [None, Some(4)] {
                    check_head(ctx, &cfg, &hc, Some(dtype), chunk, (ALL_INPUTS, false));
                    tally.count(ctx, 1);
                }
            }
        }
    }
    tally.finish();
}
