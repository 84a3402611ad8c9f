//! Kept sets computed in the kernels (docs/MATH.md#computed-kept-sets: min-p, top-k
//! and top-p after the softcap and the row's temperature; `kept_select.wgsl`): every
//! rule alone over every mode, every aggregation and dtype, the rules together, ties
//! at the k-th value and at the top-p edge, a single kept token, rows wide enough that
//! the edge is found by narrowing passes, parts and run-to-run bits, the fused head,
//! and bad input, on every adapter against the f64 reference.

mod common;

use common::tally::Tally;
use common::*;
use wgpu_policy_loss::reference::compare;
use wgpu_policy_loss::reference::sampler::{sampled_row, Sampler};
use wgpu_policy_loss::{
    Context, DType, Error, HostPart, KlEstimator, LossAggMode, LossConfig, PolicyLossMode, RowInput,
};

/// The reference's sampler of `cfg`.
fn sampler_of(cfg: &LossConfig) -> Sampler {
    Sampler {
        softcap: cfg.logit_softcap.map(f64::from),
        top_k: cfg.top_k as i64,
        top_p: cfg.top_p as f64,
        min_p: cfg.min_p as f64,
    }
}

/// Each row's kept set under `cfg` over the logits `x` as the kernels read them.
fn kept_sets(cfg: &LossConfig, case: &LossCase, x: &[f64]) -> Vec<Vec<bool>> {
    let v = case.vocab as usize;
    (0..case.rows())
        .map(|r| {
            let tau = case
                .temps
                .as_ref()
                .map_or(cfg.temperature as f64, |t| t[r] as f64);
            let row = sampled_row(&x[r * v..(r + 1) * v], tau, &sampler_of(cfg), None);
            row.expect("a valid row").keep
        })
        .collect()
}

/// `case` with each read row's target moved to one of its kept tokens (the sampler
/// could have drawn it), under `cfg` in `dtype`.
fn with_kept_targets(cfg: &LossConfig, case: &LossCase, dtype: DType, seed: u64) -> LossCase {
    use rand::RngExt;
    let mut c = case.clone();
    let x = Logits::from_f32(dtype, &c.logits).values();
    let mut r = rng(seed);
    for (row, keep) in kept_sets(cfg, &c, &x).into_iter().enumerate() {
        if c.mask[row] != 0.0 {
            let ids: Vec<u32> = (0..c.vocab).filter(|&i| keep[i as usize]).collect();
            c.targets[row] = ids[r.random_range(0..ids.len())];
        }
    }
    c
}

/// The host API against the reference on `case` (targets kept) in `dtype`, the
/// gradient in `grad`; a read row's gradient is exactly 0 outside its set. Returns the
/// entries compared and the sizes of the read rows' sets.
fn check_rules(
    ctx: &Context,
    cfg: &LossConfig,
    case: &LossCase,
    dtype: DType,
    grad: DType,
) -> (usize, Vec<usize>) {
    let logits = Logits::from_f32(dtype, &case.logits);
    let batch = case.batch(logits.host(), ALL_INPUTS);
    let what = format!("{} {dtype}→{grad} {cfg:?}", name(ctx));
    let got = ctx
        .policy_loss_parts(cfg, &[HostPart::from(batch)], Some(grad))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let x = logits.values();
    let want = case.reference(cfg, &x, ALL_INPUTS, false);
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
    let read: Vec<usize> = (0..case.rows()).filter(|&r| case.mask[r] > 0.0).collect();
    for &r in &read {
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
    let sets = kept_sets(cfg, case, &x);
    let v = case.vocab as usize;
    for &r in &read {
        for (c, &gx) in g[r * v..(r + 1) * v].iter().enumerate() {
            assert!(
                sets[r][c] || gx == 0.0,
                "{what}: row {r} column {c} outside its set: {gx}"
            );
        }
    }
    let sizes = read
        .iter()
        .map(|&r| sets[r].iter().filter(|&&k| k).count())
        .collect();
    (n + g.len(), sizes)
}

fn config(mode: PolicyLossMode) -> LossConfig {
    let dual = (mode == PolicyLossMode::PpoClip).then_some(3.0);
    let agg = LossAggMode::SeqMeanTokenMean;
    loss_config(mode, agg, KlEstimator::K3, (1.0, 0.05, 0.01, dual))
}

/// The three rules, each alone.
fn rule(i: usize) -> LossConfig {
    let base = LossConfig::default();
    [
        LossConfig { top_k: 9, ..base },
        LossConfig { top_p: 0.8, ..base },
        LossConfig {
            min_p: 0.08,
            ..base
        },
    ][i % 3]
}

fn with_rule(cfg: LossConfig, r: &LossConfig) -> LossConfig {
    LossConfig {
        top_k: r.top_k,
        top_p: r.top_p,
        min_p: r.min_p,
        ..cfg
    }
}

/// Asserts that the sets truncate the row (more than one token, fewer than all).
fn truncates(what: &str, sizes: &[usize], vocab: u32) {
    assert!(
        sizes.iter().any(|&s| s > 1 && s < vocab as usize),
        "{what}: no row's set truncates it: {sizes:?}"
    );
}

/// Every rule alone over every mode (the dtypes cycled; the softcap or per-token
/// temperatures on a third of them), and every aggregation with one, on every adapter.
#[test]
fn every_rule_alone_over_every_mode() {
    let case = LossCase::new(111, 4, 5, 203);
    let temps: Vec<f32> = (0..case.rows())
        .map(|r| 0.6 + 0.07 * (r % 9) as f32)
        .collect();
    let mut tally = Tally::new("entries over computed kept sets against the reference");
    for ctx in contexts() {
        let mut n = 0;
        for (i, &mode) in PolicyLossMode::ALL.iter().enumerate() {
            for j in 0..3 {
                let mut c = case.clone();
                let mut cfg = with_rule(config(mode), &rule(j));
                match (i + j) % 3 {
                    1 => cfg.logit_softcap = Some(3.0),
                    2 => c.temps = Some(temps.clone()),
                    _ => {}
                }
                let dtype = DType::ALL[(i + j) % 3];
                let c = with_kept_targets(&cfg, &c, dtype, 112 + i as u64);
                let (m, sizes) = check_rules(ctx, &cfg, &c, dtype, DType::ALL[i % 3]);
                truncates(&format!("{mode:?} rule {j}"), &sizes, c.vocab);
                n += m;
            }
        }
        for (k, (agg, global)) in aggregations(13.0).into_iter().enumerate() {
            let cfg = LossConfig {
                loss_agg_mode: agg,
                global_normalizer: global,
                ..with_rule(config(PolicyLossMode::PpoClip), &rule(k))
            };
            let dtype = DType::ALL[k % 3];
            let c = with_kept_targets(&cfg, &case, dtype, 113 + k as u64);
            n += check_rules(ctx, &cfg, &c, dtype, DType::F32).0;
        }
        tally.count(ctx, n);
    }
    tally.finish();
}

/// min-p, top-k and top-p together, with the softcap and per-token temperatures, in
/// every dtype: each rule binds on some row.
#[test]
fn the_rules_together() {
    let mut case = LossCase::new(114, 3, 4, 311);
    case.temps = Some((0..case.rows()).map(|r| 0.5 + 0.1 * r as f32).collect());
    let mut tally = Tally::new("entries under min-p + top-k + top-p");
    for ctx in contexts() {
        let mut n = 0;
        for (i, dtype) in DType::ALL.into_iter().enumerate() {
            let cfg = LossConfig {
                top_k: 40,
                top_p: 0.9,
                min_p: 0.02,
                logit_softcap: (i != 1).then_some(5.0),
                ..config(PolicyLossMode::PpoClip)
            };
            let c = with_kept_targets(&cfg, &case, dtype, 115);
            let (m, sizes) = check_rules(ctx, &cfg, &c, dtype, dtype);
            truncates(&format!("{dtype}"), &sizes, c.vocab);
            n += m;
        }
        tally.count(ctx, n);
    }
    tally.finish();
}

/// Small-integer logits, so that values tie exactly: top-k keeps every token tied
/// with the k-th value, top-p's tied tokens stand or fall together, and the sets are
/// the sizes counted here by hand. Each row holds three 5s, two 4s, four 3s, then the
/// values 0, 1, 2 in turn (19, 18 and 18 of them): the mass fractions from the top are
/// 0.533, 0.664, 0.760, 0.919, 0.977 and 1, each edge 0.03 or more from a p below.
#[test]
fn ties_at_the_edges() {
    let mut case = LossCase::new(116, 2, 3, 64);
    let top = [5.0, 5.0, 5.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0];
    for (i, x) in case.logits.iter_mut().enumerate() {
        let c = i % 64;
        *x = top.get(c).copied().unwrap_or((c % 3) as f32);
    }
    let base = config(PolicyLossMode::PpoClip);
    let k = |k| LossConfig { top_k: k, ..base };
    let p = |p| LossConfig { top_p: p, ..base };
    let cases = [
        (k(1), 3),
        (k(3), 3),
        (k(4), 5),
        (k(5), 5),
        (k(6), 9),
        (p(0.5), 3),
        (p(0.6), 5),
        (p(0.7), 9),
        (p(0.95), 45),
    ];
    let mut tally = Tally::new("tied edges against the reference");
    for ctx in contexts() {
        let mut n = 0;
        for (i, (cfg, want)) in cases.iter().enumerate() {
            let dtype = DType::ALL[i % 3];
            let c = with_kept_targets(cfg, &case, dtype, 117);
            let (m, sizes) = check_rules(ctx, cfg, &c, dtype, DType::F32);
            assert!(sizes.iter().all(|s| s == want), "{cfg:?}: {sizes:?}");
            n += m;
        }
        tally.count(ctx, n);
    }
    tally.finish();
}

/// A set of one token (top-k 1, or top-p so small that only the largest stays): its
/// log-prob is exactly 0 and its gradient exactly 0, as the reference's.
#[test]
fn a_single_kept_token() {
    let case = LossCase::new(118, 2, 4, 97);
    let base = config(PolicyLossMode::PpoClip);
    let mut tally = Tally::new("single-token rows exact");
    for ctx in contexts() {
        let mut n = 0;
        for (i, cfg) in [
            LossConfig { top_k: 1, ..base },
            LossConfig {
                top_p: 1e-3,
                logit_softcap: Some(4.0),
                ..base
            },
        ]
        .iter()
        .enumerate()
        {
            let dtype = DType::ALL[i + 1];
            let c = with_kept_targets(cfg, &case, dtype, 119);
            let (m, sizes) = check_rules(ctx, cfg, &c, dtype, DType::F32);
            assert!(sizes.iter().all(|&s| s == 1), "{cfg:?}: {sizes:?}");
            let logits = Logits::from_f32(dtype, &c.logits);
            let got = ctx
                .policy_loss(cfg, &c.batch(logits.host(), ALL_INPUTS), Some(DType::F32))
                .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
            let g = got.grad.as_ref().expect("a gradient").to_f32();
            for r in (0..c.rows()).filter(|&r| c.mask[r] > 0.0) {
                assert_eq!(got.logprobs[r], 0.0, "{}: logprobs[{r}]", name(ctx));
                let v = c.vocab as usize;
                assert!(
                    g[r * v..(r + 1) * v].iter().all(|&x| x == 0.0),
                    "{}: row {r}'s gradient is not 0",
                    name(ctx)
                );
            }
            n += m;
        }
        tally.count(ctx, n);
    }
    tally.finish();
}

/// Rows far wider than workgroup memory holds (40000 columns): top-p's edge is found by
/// narrowing passes, top-k beyond a lane a token by counting passes, on logits spread
/// evenly (many ties in bf16) and normally.
#[test]
fn wide_rows_narrow_to_the_edge() {
    let mut even = LossCase::new(120, 2, 2, 40_000);
    for (i, x) in even.logits.iter_mut().enumerate() {
        *x = ((i as u32).wrapping_mul(2654435761) >> 16) as f32 / 65536.0 * 8.0 - 4.0;
    }
    let normal = LossCase::new(121, 2, 2, 40_000);
    let base = config(PolicyLossMode::PpoClip);
    let temps: Vec<f32> = vec![0.7, 1.0, 1.3, 0.9];
    let mut tally = Tally::new("wide rows against the reference");
    for ctx in contexts() {
        let mut n = 0;
        for (i, cfg) in [
            LossConfig { top_p: 0.9, ..base },
            LossConfig {
                top_k: 1000,
                ..base
            },
            LossConfig {
                top_p: 0.7,
                min_p: 0.01,
                logit_softcap: Some(10.0),
                ..base
            },
            LossConfig {
                top_k: 50,
                top_p: 0.95,
                ..base
            },
        ]
        .iter()
        .enumerate()
        {
            for (j, case) in [&even, &normal].into_iter().enumerate() {
                let mut c = case.clone();
                if (i + j) % 2 == 1 {
                    c.temps = Some(temps.clone());
                }
                let dtype = [DType::Bf16, DType::F32][(i + j) % 2];
                let c = with_kept_targets(cfg, &c, dtype, 122);
                let (m, sizes) = check_rules(ctx, cfg, &c, dtype, DType::F32);
                truncates(&format!("{cfg:?}"), &sizes, c.vocab);
                n += m;
            }
        }
        tally.count(ctx, n);
    }
    tally.finish();
}

/// The same bits whatever the batching, with every rule, the softcap and per-token
/// temperatures on: one part against two, and again.
#[test]
fn the_same_bits_in_parts_and_run_to_run() {
    let mut case = LossCase::new(123, 4, 3, 3001);
    case.temps = Some((0..case.rows()).map(|r| 0.7 + 0.05 * r as f32).collect());
    let cfg = LossConfig {
        top_k: 300,
        top_p: 0.9,
        min_p: 0.001,
        logit_softcap: Some(6.0),
        ..config(PolicyLossMode::PpoClip)
    };
    let case = with_kept_targets(&cfg, &case, DType::Bf16, 124);
    let logits = Logits::from_f32(DType::Bf16, &case.logits);
    let (rows, v) = (6, case.vocab as usize);
    let halves = [
        Logits::from_f32(DType::Bf16, &case.logits[..rows * v]),
        Logits::from_f32(DType::Bf16, &case.logits[rows * v..]),
    ];
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
            let b = case.rows_of(whole, halves[h].host(), (r0, r1, s0, s1), Some(&temps));
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

/// The fused head: each chunk's rows select their sets from the chunk's logits (chunks
/// that do not divide the rows), top-p with per-token temperatures and top-k with the
/// softcap, ppo and GSPO (whose statistics come first, so the chunks are made twice).
#[test]
fn the_head_selects_per_chunk() {
    use common::head::{check_head, ppo, HeadCase};
    let mut tally = Tally::new("head calls over computed kept sets");
    for ctx in contexts() {
        for (k, dtype) in [DType::F32, DType::Bf16].into_iter().enumerate() {
            let mut hc = HeadCase::new(125 + k as u64, (3, 5, 143, 24), dtype);
            let rules = [
                LossConfig {
                    top_p: 0.8,
                    ..ppo()
                },
                LossConfig {
                    top_k: 12,
                    logit_softcap: Some(4.0),
                    ..ppo()
                },
            ];
            let rule = rules[k];
            if k == 0 {
                hc.case.temps = Some((0..hc.case.rows()).map(|r| 0.8 + 0.03 * r as f32).collect());
            }
            let x = wgpu_policy_loss::reference::head_logits(
                &hc.hidden.values(),
                &hc.lm_head.values(),
                hc.h as usize,
            );
            let sets = kept_sets(&rule, &hc.case, &x);
            let v = hc.case.vocab as usize;
            for (r, keep) in sets.iter().enumerate() {
                if hc.case.mask[r] != 0.0 {
                    hc.case.targets[r] = (0..v).rev().find(|&i| keep[i]).expect("a kept id") as u32;
                }
            }
            for mode in [PolicyLossMode::PpoClip, PolicyLossMode::Gspo] {
                let cfg = LossConfig { mode, ..rule };
                for chunk in [None, Some(4)] {
                    check_head(ctx, &cfg, &hc, Some(dtype), chunk, (ALL_INPUTS, false));
                    tally.count(ctx, 1);
                }
            }
        }
    }
    tally.finish();
}

/// The metrics of the device path (no host check) on `case`, f32 logits.
fn device_metrics(ctx: &Context, cfg: &LossConfig, case: &LossCase) -> wgpu_policy_loss::Metrics {
    use wgpu_policy_loss::{Advantages, F32View, Gradient, LogitsView, LossInputs, TargetsView};
    let x = ctx.upload("logits", bytemuck::cast_slice(&case.logits));
    let b = case.upload_rows(ctx);
    let logits = LogitsView::new(&x, DType::F32, case.rows() as u32, case.vocab)
        .with_sequences(case.rows_per_seq, (case.rows_per_seq * case.vocab) as u64);
    let inputs = LossInputs::new(
        logits,
        TargetsView::new(&b.targets),
        F32View::new(&b.mask),
        Advantages::PerSequence(F32View::new(&b.adv_seq)),
    )
    .with_old_logprobs(F32View::new(&b.old))
    .with_ref_logprobs(F32View::new(&b.refp));
    record_and_read(ctx, *cfg, &inputs, Gradient::InPlace, &[]).0
}

/// A read row's target outside its computed set names `targets` and the row on the
/// host path (from the device's count), and is NaN, counted and named on the device
/// path;
/// unread rows are not checked. Vocabulary shards and rows wider than one binding are
/// an error naming the option.
#[test]
fn bad_targets_and_unsupported_calls_are_named() {
    let case = LossCase::new(126, 2, 4, 31);
    let cfg = LossConfig {
        top_k: 3,
        ..config(PolicyLossMode::PpoClip)
    };
    let mut c = with_kept_targets(&cfg, &case, DType::F32, 127);
    let x = Logits::from_f32(DType::F32, &c.logits);
    let sets = kept_sets(&cfg, &c, &x.values());
    let row = 2;
    assert!(c.mask[row] > 0.0);
    c.targets[row] = (0..c.vocab)
        .find(|&i| !sets[row][i as usize])
        .expect("a dropped id");
    let mut tally = Tally::new("bad computed-set input named or counted");
    for ctx in contexts() {
        match ctx.policy_loss(&cfg, &c.batch(x.host(), ALL_INPUTS), Some(DType::F32)) {
            Err(Error::InvalidInput {
                tensor: RowInput::Targets,
                row: r,
                value,
            }) => {
                assert_eq!((r, value), (row, c.targets[row] as f32), "{}", name(ctx));
            }
            other => panic!("{}: want targets' row {row}, got {other:?}", name(ctx)),
        }
        // the device path: the row made NaN and counted, named with its id
        let m = device_metrics(ctx, &cfg, &c);
        assert!(m.loss.is_nan(), "{}: the loss is {}", name(ctx), m.loss);
        assert_eq!(m.invalid_input_rows, 1.0, "{}", name(ctx));
        let bad = m.invalid_input.expect("a bad row named");
        assert_eq!(
            (bad.tensor, bad.row),
            (RowInput::Targets, row as u32),
            "{}",
            name(ctx)
        );
        // masked out, the same row is no error
        let mut unread = c.clone();
        unread.mask[row] = 0.0;
        ctx.policy_loss(&cfg, &unread.batch(x.host(), ALL_INPUTS), Some(DType::F32))
            .unwrap_or_else(|e| panic!("{}: an unread row: {e}", name(ctx)));
        for (option, cfg) in [
            ("top_k", cfg),
            (
                "top_p",
                LossConfig {
                    top_k: 0,
                    top_p: 0.5,
                    ..cfg
                },
            ),
            (
                "min_p",
                LossConfig {
                    top_k: 0,
                    min_p: 0.5,
                    ..cfg
                },
            ),
        ] {
            let shards = wgpu_policy_loss::VocabShards::even(c.vocab, 2).expect("shards");
            let piece: Vec<f32> = (0..c.rows())
                .flat_map(|r| c.logits[r * 31..r * 31 + 16].to_vec())
                .collect();
            let piece = Logits::from_f32(DType::F32, &piece);
            let partials = ctx.shard_partials(&cfg, &shards, 0, piece.host(), &c.targets);
            assert_arg(partials, option);
        }
        tally.count(ctx, 5);
    }
    tally.finish();
}
