//! The losses that choose tokens batch-wide (shaders/select.wgsl): `clip_cov` and
//! `kl_cov`'s covariance selection, the top-entropy mask (quantile and renormalised
//! top-k), the rollout correction; and the other new modes (`cispo`, `sapo`, `gpg`).
//! Loss, metrics and gradient against the f64 reference on every adapter and path; the
//! edge cases docs/MATH.md names; the choices bit for bit the same chunked, in parts,
//! and run to run.

mod common;

use common::*;
use wgpu_policy_loss::{
    reference, Context, DType, HostBatch, HostLogits, HostPart, KlEstimator, LossAggMode,
    LossConfig, PolicyLossMode, RolloutCorrection, RolloutLevel, RolloutMode,
};

const NEW_MODES: [PolicyLossMode; 5] = [
    PolicyLossMode::Cispo,
    PolicyLossMode::Sapo,
    PolicyLossMode::Gpg,
    PolicyLossMode::ClipCov,
    PolicyLossMode::KlCov,
];

/// Shares large enough that a small batch selects a few tokens.
fn config(mode: PolicyLossMode, agg: LossAggMode) -> LossConfig {
    LossConfig {
        mode,
        loss_agg_mode: agg,
        kl_loss_type: KlEstimator::K3,
        kl_coef: 0.05,
        entropy_coeff: 0.01,
        clip_ratio_high: 0.28,
        kl_cov_ratio: 0.2,
        clip_cov_ratio: 0.3,
        clip_cov_lb: -2.0,
        clip_cov_ub: 2.0,
        ppo_kl_coef: 0.2,
        tau_pos: 1.2,
        tau_neg: 0.9,
        dro_beta: (mode == PolicyLossMode::Dro).then_some(0.3),
        ..LossConfig::default()
    }
}

fn with_old(old: bool) -> Use {
    Use {
        per_token_adv: false,
        old,
        refp: true,
    }
}

/// Every new mode in every aggregation, with and without old log-probs, every dtype.
#[test]
fn new_modes_match_the_reference() {
    let case = LossCase::new(71, 4, 6, 37);
    for ctx in contexts() {
        for mode in NEW_MODES {
            for (i, agg) in LossAggMode::ALL.into_iter().enumerate() {
                let cfg = config(mode, agg);
                let dtype = DType::ALL[i % 3];
                check_loss(ctx, &cfg, &case, dtype, Some(DType::F32), with_old(true));
                check_loss(ctx, &cfg, &case, dtype, Some(dtype), with_old(false));
            }
        }
    }
}

/// The top-entropy mask (the quantile, and the renormalised top-k) and the rollout
/// correction (every level and mode), over every mode, with and without old log-probs
/// (without them the rollout ratio needs the current log-probs first).
#[test]
fn options_match_the_reference() {
    let case = LossCase::new(72, 4, 6, 40);
    for ctx in contexts() {
        for (i, mode) in PolicyLossMode::ALL.into_iter().enumerate() {
            let mut valid = 0;
            let agg = LossAggMode::ALL[i % 4];
            for (j, rho) in [Some(0.5), Some(0.8), None].into_iter().enumerate() {
                let level = RolloutLevel::ALL[(i + j) % 3];
                let rmode = RolloutMode::ALL[(i + j) % 2];
                let cfg = LossConfig {
                    top_entropy_quantile: rho,
                    top_entropy_renormalize: rho.is_some() && (i + j) % 2 == 1,
                    rollout_correction: Some(RolloutCorrection {
                        threshold: 1.6,
                        ..RolloutCorrection::new(level, rmode)
                    }),
                    ..config(mode, agg)
                };
                if cfg.validate().is_err() {
                    // geo_mean takes no entropy mask, vespo only token-level weights
                    continue;
                }
                for old in [true, false] {
                    check_loss_with(
                        ctx,
                        &cfg,
                        &case,
                        DType::Bf16,
                        Some(DType::F32),
                        with_old(old),
                        true,
                    );
                }
                valid += 1;
            }
            // every mode takes some correction level with some entropy mask
            assert!(valid > 0, "{mode:?}: every configuration was invalid");
        }
    }
}

/// A batch of identical rows (the same logits, id and advantage): every entropy, log-prob
/// and covariance ties, bit for bit on the device and exactly in the reference.
fn tied_case(rows: u32, vocab: u32) -> LossCase {
    let mut case = LossCase::new(73, 1, rows, vocab);
    let row = case.logits[..vocab as usize].to_vec();
    for r in 0..rows as usize {
        case.logits[r * vocab as usize..(r + 1) * vocab as usize].copy_from_slice(&row);
        case.targets[r] = 3;
        case.mask[r] = 1.0;
        case.old[r] = case.old[0];
        case.refp[r] = case.refp[0];
        case.rollout[r] = case.rollout[0];
    }
    case
}

/// Ties go to the lower row: with every token tied, kl_cov takes the first k rows and
/// the renormalised entropy mask the first ⌈ρ·N⌉; the quantile of equal entropies keeps
/// them all; both match the reference's choice exactly.
#[test]
fn ties_go_to_the_lower_row() {
    let case = tied_case(10, 33);
    let k_cov = LossConfig {
        kl_cov_ratio: 0.3,
        ..config(PolicyLossMode::KlCov, LossAggMode::TokenMean)
    };
    let top = LossConfig {
        top_entropy_quantile: Some(0.35),
        top_entropy_renormalize: true,
        ..config(PolicyLossMode::PpoClip, LossAggMode::SeqMeanTokenMean)
    };
    let quantile = LossConfig {
        top_entropy_quantile: Some(0.35),
        ..config(PolicyLossMode::PpoClip, LossAggMode::TokenMean)
    };
    for ctx in contexts() {
        for (cfg, frac) in [(&k_cov, 0.3), (&top, 0.4), (&quantile, 1.0)] {
            check_loss(
                ctx,
                cfg,
                &case,
                DType::F32,
                Some(DType::F32),
                with_old(true),
            );
            let got = ctx
                .policy_loss(
                    cfg,
                    &case.batch(HostLogits::F32(&case.logits), with_old(true)),
                    None,
                )
                .unwrap();
            let m = got.metrics;
            let chosen = if cfg.mode == PolicyLossMode::KlCov {
                m.cov_selected_frac
            } else {
                m.entropy_mask_frac
            };
            assert!(
                (chosen - frac).abs() < 1e-6,
                "{}: {cfg:?}: {m:?}",
                name(ctx)
            );
        }
    }
    // the reference's choice: the lowest rows
    let want = reference_of(&k_cov, &case, true);
    assert_eq!(want.selected[..4], [true, true, true, false]);
    let want = reference_of(&top, &case, true);
    assert_eq!(want.kept[..5], [true, true, true, true, false]);
}

/// One advantage for every token (a batch of one sequence), or one log-prob for every
/// token: every covariance is exactly 0, so every token ties. Σ/N in f32 is not that
/// one value, and a kernel that took the mean as Σ/N chose by the sign of its rounding
/// (the fuzzer found it: kl_cov picked the last token, the reference the first); the
/// kernel takes the means about a pivot token and the deviations are exactly 0.
/// kl_cov takes the lowest rows; clip_cov with a bound at 0 has no candidate; every
/// dtype.
#[test]
fn one_advantage_or_one_log_prob_ties_every_covariance() {
    // one sequence: one advantage (that 9 copies of do not sum exactly in f32)
    let mut one_adv = LossCase::new(75, 1, 9, 41);
    one_adv.adv_seq[0] = 0.463_102_7;
    one_adv.mask = vec![1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5];
    for (r, y) in one_adv.targets.iter_mut().enumerate() {
        *y = (5 * r as u32) % 41;
    }
    // identical rows, an advantage each
    let mut one_logp = tied_case(9, 41);
    for (r, a) in one_logp.adv_tok.iter_mut().enumerate() {
        *a = 0.3 + 0.11 * r as f32;
    }
    let kl_cov = LossConfig {
        kl_cov_ratio: 0.3,
        ..config(PolicyLossMode::KlCov, LossAggMode::TokenMean)
    };
    let clip_cov = |lb: f32, ub: f32| LossConfig {
        clip_cov_ratio: 0.5,
        clip_cov_lb: lb,
        clip_cov_ub: ub,
        ..config(PolicyLossMode::ClipCov, LossAggMode::TokenMean)
    };
    // old log-probs 0.2 above the current ones (of the ids set above): kl_cov's
    // κ·sign(logp − old) must not flip under a 16-bit dtype's rounding of the logits
    for case in [&mut one_adv, &mut one_logp] {
        let exact =
            reference::row_stats_batch(&case.logits, case.vocab as usize, &case.targets, 1.0);
        case.old = exact.iter().map(|s| (s.logp + 0.2) as f32).collect();
    }
    let cfgs = [kl_cov, clip_cov(0.0, 2.0), clip_cov(-2.0, 0.0)];
    for (case, per_token_adv) in [(&one_adv, false), (&one_logp, true)] {
        let using = Use {
            per_token_adv,
            ..with_old(true)
        };
        let want = case.reference(&kl_cov, &x64(case), using, false);
        assert_eq!(want.selected[..3], [true, true, false]);
        for ctx in contexts() {
            for cfg in &cfgs {
                for dtype in DType::ALL {
                    check_loss(ctx, cfg, case, dtype, Some(DType::F32), using);
                }
                let batch = case.batch(HostLogits::F32(&case.logits), using);
                let m = ctx.policy_loss(cfg, &batch, None).unwrap().metrics;
                // kl_cov: rows 0 and 1, of mask 1; clip_cov: none
                let mask_sum: f32 = case.mask.iter().sum();
                let want_frac = match cfg.mode {
                    PolicyLossMode::KlCov => 2.0 / mask_sum,
                    _ => 0.0,
                };
                assert!(
                    (m.cov_selected_frac - want_frac).abs() < 1e-6,
                    "{}: {cfg:?}: {m:?}",
                    name(ctx)
                );
            }
        }
    }
}

fn x64(case: &LossCase) -> Vec<f64> {
    case.logits.iter().map(|&v| v as f64).collect()
}

fn reference_of(cfg: &LossConfig, case: &LossCase, rollout: bool) -> reference::LossOutput {
    case.reference(cfg, &x64(case), with_old(true), rollout)
}

/// Entropies spread far apart (each row's logits scaled differently), so that ordering
/// them is unambiguous in f32 and f64 alike.
fn spread_case(rows: u32, vocab: u32) -> LossCase {
    let mut case = LossCase::new(74, 1, rows, vocab);
    for r in 0..rows as usize {
        let scale = 0.2 + 0.9 * r as f32;
        for v in 0..vocab as usize {
            case.logits[r * vocab as usize + v] = scale * ((v * 7 + r) % 11) as f32 / 11.0;
        }
        case.mask[r] = 1.0;
        case.targets[r] = r as u32 % vocab;
    }
    case
}

/// The quantile lands exactly on a token (5 tokens, ρ_H = 0.5: position 2): θ is that
/// token's entropy and it is kept with the higher ones; ρ_H = 1 keeps every token.
#[test]
fn a_quantile_on_a_token_and_rho_one() {
    let case = spread_case(5, 24);
    for ctx in contexts() {
        for (rho, frac) in [(0.5, 0.6), (1.0, 1.0)] {
            let cfg = LossConfig {
                top_entropy_quantile: Some(rho),
                ..config(PolicyLossMode::PpoClip, LossAggMode::TokenMean)
            };
            check_loss(
                ctx,
                &cfg,
                &case,
                DType::F32,
                Some(DType::F32),
                with_old(true),
            );
            let want = reference_of(&cfg, &case, false);
            assert!(
                (want.metrics.entropy_mask_frac - frac).abs() < 1e-12,
                "{want:?}"
            );
        }
    }
}

/// kl_cov with ratio 1 selects every token; clip_cov whose bounds no covariance falls
/// between selects none (a loss that equals ppo_clip's without dual-clip); rollout
/// weights all truncated to a C_hi below every ratio.
#[test]
fn all_selected_none_a_candidate_all_truncated() {
    let case = LossCase::new(75, 3, 5, 29);
    let all = LossConfig {
        kl_cov_ratio: 1.0,
        ..config(PolicyLossMode::KlCov, LossAggMode::TokenMean)
    };
    let none = LossConfig {
        clip_cov_lb: 1e6,
        clip_cov_ub: 2e6,
        ..config(PolicyLossMode::ClipCov, LossAggMode::TokenMean)
    };
    let truncated = LossConfig {
        rollout_correction: Some(RolloutCorrection {
            threshold: 1e-3,
            threshold_lower: Some(0.0),
            ..RolloutCorrection::new(RolloutLevel::Token, RolloutMode::Truncate)
        }),
        ..config(PolicyLossMode::PpoClip, LossAggMode::TokenMean)
    };
    for ctx in contexts() {
        let run = |cfg: &LossConfig, rollout: bool| {
            check_loss_with(
                ctx,
                cfg,
                &case,
                DType::F32,
                Some(DType::F32),
                with_old(true),
                rollout,
            );
            let batch = case.batch(HostLogits::F32(&case.logits), with_old(true));
            let part = HostPart {
                batch,
                rollout_logprobs: rollout.then_some(&case.rollout[..]),
            };
            ctx.policy_loss_parts(cfg, &[part], None).unwrap().metrics
        };
        let m = run(&all, false);
        assert_eq!(m.cov_selected_frac, 1.0, "{}", name(ctx));
        let m = run(&none, false);
        assert_eq!(m.cov_selected_frac, 0.0, "{}", name(ctx));
        let plain = LossConfig {
            mode: PolicyLossMode::PpoClip,
            clip_ratio_c: None,
            ..none
        };
        let p = run(&plain, false);
        assert_eq!(m.loss.to_bits(), p.loss.to_bits(), "{}", name(ctx));
        let m = run(&truncated, true);
        assert_eq!(m.rollout_is_clipfrac, 1.0, "{}", name(ctx));
        assert_eq!((m.rollout_is_min, m.rollout_is_max), (1e-3, 1e-3));
    }
}

/// Junk sampler log-probs (NaN, ±inf, 1e30) on masked-out rows change nothing: the
/// same bits as sane ones there.
#[test]
fn junk_rollout_log_probs_where_masked_out() {
    let case = LossCase::new(76, 3, 6, 31);
    let mut sane = LossCase::new(76, 3, 6, 31);
    for (r, m) in sane.mask.iter().enumerate() {
        if *m <= 0.0 {
            sane.rollout[r] = -1.0;
        }
    }
    for ctx in contexts() {
        for level in RolloutLevel::ALL {
            let cfg = LossConfig {
                rollout_correction: Some(RolloutCorrection::new(level, RolloutMode::Mask)),
                ..config(PolicyLossMode::PpoClip, LossAggMode::SeqMeanTokenMean)
            };
            let run = |c: &LossCase| {
                let batch = c.batch(HostLogits::F32(&c.logits), with_old(false));
                ctx.policy_loss_parts(
                    &cfg,
                    &[batch.with_rollout_logprobs(&c.rollout)],
                    Some(DType::F32),
                )
                .unwrap()
            };
            assert!(
                same_bits(&run(&case), &run(&sane)),
                "{} {level:?}",
                name(ctx)
            );
            check_loss_with(
                ctx,
                &cfg,
                &case,
                DType::F32,
                Some(DType::F32),
                with_old(false),
                true,
            );
        }
    }
}

/// The choices do not depend on the chunking (1 MiB bindings, a 16 × 16 grid), on the
/// parts the batch comes in, or on the run: the same bits.
#[test]
fn choices_are_chunk_and_part_invariant() {
    let case = LossCase::new(77, 6, 50, 4099);
    let logits = Logits::from_f32(DType::Bf16, &case.logits);
    let cfgs = [
        LossConfig {
            kl_cov_ratio: 0.05,
            ..config(PolicyLossMode::KlCov, LossAggMode::SeqMeanTokenMean)
        },
        LossConfig {
            clip_cov_ratio: 0.05,
            ..config(PolicyLossMode::ClipCov, LossAggMode::TokenMean)
        },
        LossConfig {
            top_entropy_quantile: Some(0.3),
            top_entropy_renormalize: true,
            rollout_correction: Some(RolloutCorrection::new(
                RolloutLevel::Geometric,
                RolloutMode::Truncate,
            )),
            ..config(PolicyLossMode::Gspo, LossAggMode::SeqMeanTokenSum)
        },
    ];
    let part = |s0: usize, s1: usize| -> HostPart<'_> {
        let (r0, r1) = (s0 * 50, s1 * 50);
        let v = 4099;
        HostBatch {
            kept: None,
            temperatures: None,
            logits: HostLogits::Bf16(&logits.bf16[r0 * v..r1 * v]),
            vocab: 4099,
            rows_per_seq: Some(50),
            targets: &case.targets[r0..r1],
            mask: &case.mask[r0..r1],
            advantages: &case.adv_seq[s0..s1],
            old_logprobs: Some(&case.old[r0..r1]),
            ref_logprobs: Some(&case.refp[r0..r1]),
        }
        .with_rollout_logprobs(&case.rollout[r0..r1])
    };
    for full in opened() {
        let a = full.adapter().unwrap();
        let small = Context::from_adapter_with_limits(
            a,
            wgpu_policy_loss::wgpu::Limits {
                max_storage_buffer_binding_size: 1 << 20,
                max_compute_workgroups_per_dimension: 16,
                ..a.limits()
            },
        )
        .unwrap();
        for cfg in &cfgs {
            let what = format!("{} {cfg:?}", name(&full));
            let one = full
                .policy_loss_parts(cfg, &[part(0, 6)], Some(DType::Bf16))
                .unwrap();
            let again = full
                .policy_loss_parts(cfg, &[part(0, 6)], Some(DType::Bf16))
                .unwrap();
            assert!(same_bits(&one, &again), "{what}: two runs");
            let chunked = small
                .policy_loss_parts(cfg, &[part(0, 6)], Some(DType::Bf16))
                .unwrap();
            assert!(same_bits(&one, &chunked), "{what}: chunked");
            let parts = full
                .policy_loss_parts(
                    cfg,
                    &[part(0, 2), part(2, 3), part(3, 6)],
                    Some(DType::Bf16),
                )
                .unwrap();
            assert!(same_bits(&one, &parts), "{what}: parts");
            // and something was chosen
            let m = one.metrics;
            assert!(
                m.cov_selected_frac > 0.0 || m.entropy_mask_frac < 1.0,
                "{what}: nothing chosen: {m:?}"
            );
        }
    }
}

/// The number of launches of each family, as `PolicyLoss::launches` says.
#[test]
fn launches_per_family() {
    let ctx = &contexts()[0];
    let launches = |cfg: LossConfig, old| {
        wgpu_policy_loss::PolicyLoss::new(ctx, cfg)
            .unwrap()
            .launches_for(old)
    };
    let d = LossConfig::default();
    let rollout = Some(RolloutCorrection::new(
        RolloutLevel::Sequence,
        RolloutMode::Truncate,
    ));
    assert_eq!(launches(d, true), 3);
    for mode in [
        PolicyLossMode::Cispo,
        PolicyLossMode::Sapo,
        PolicyLossMode::Gpg,
    ] {
        assert_eq!(launches(LossConfig { mode, ..d }, true), 3);
    }
    assert_eq!(
        launches(
            LossConfig {
                mode: PolicyLossMode::Gspo,
                ..d
            },
            true
        ),
        5
    );
    for mode in [PolicyLossMode::ClipCov, PolicyLossMode::KlCov] {
        assert_eq!(launches(LossConfig { mode, ..d }, true), 5);
    }
    let mask = LossConfig {
        top_entropy_quantile: Some(0.2),
        ..d
    };
    assert_eq!(launches(mask, true), 5);
    let rc = LossConfig {
        rollout_correction: rollout,
        ..d
    };
    assert_eq!(launches(rc, true), 4);
    assert_eq!(launches(rc, false), 5);
}

/// TRL's loss types set the mode and the aggregation
/// docs/MATH.md#aggregation-and-presets maps them to; `grpo` counts empty sequences in
/// B' (sequence 1 of the case is empty), matching the reference.
#[test]
fn trl_loss_types() {
    use wgpu_policy_loss::TrlLossType as T;
    let case = LossCase::new(78, 4, 5, 33);
    let base = LossConfig::default();
    let get = |t, l| base.with_loss_type(t, l).unwrap();
    assert_eq!(get(T::Bnpo, None).loss_agg_mode, LossAggMode::TokenMean);
    assert_eq!(get(T::Dapo, None).loss_agg_mode, LossAggMode::TokenMean);
    let dr = get(T::DrGrpo, Some(512));
    assert_eq!(
        (dr.loss_agg_mode, dr.l_norm),
        (LossAggMode::SeqMeanTokenSumNorm, Some(512.0))
    );
    assert!(base.with_loss_type(T::DrGrpo, None).is_err());
    assert_eq!(get(T::Cispo, None).mode, PolicyLossMode::Cispo);
    let sapo = get(T::Sapo, None);
    assert_eq!(
        (sapo.mode, sapo.loss_agg_mode),
        (PolicyLossMode::Sapo, LossAggMode::SeqMeanTokenMean)
    );
    let grpo = get(T::Grpo, None);
    assert!(grpo.count_empty_sequences);
    for ctx in contexts() {
        for t in T::ALL {
            let cfg = base.with_loss_type(t, Some(7)).unwrap();
            check_loss(ctx, &cfg, &case, DType::F32, Some(DType::F32), ALL_INPUTS);
        }
    }
    // grpo's mean over every sequence: 3 non-empty of 4, so 3/4 of seq-mean-token-mean's
    let f = |cfg: &LossConfig| {
        contexts()[0]
            .policy_loss(
                cfg,
                &case.batch(HostLogits::F32(&case.logits), ALL_INPUTS),
                None,
            )
            .unwrap()
            .metrics
            .loss
    };
    let plain = LossConfig {
        mode: PolicyLossMode::Reinforce,
        loss_agg_mode: LossAggMode::SeqMeanTokenMean,
        ..base
    };
    let trl = LossConfig {
        count_empty_sequences: true,
        ..plain
    };
    assert!((f(&trl) - 0.75 * f(&plain)).abs() <= 1e-6 * f(&plain).abs().max(1.0));
}

/// Bad values are errors naming the field.
#[test]
fn bad_options_are_named() {
    let d = LossConfig::default();
    let bad = |cfg: LossConfig, arg: &str| {
        let e = cfg.validate().unwrap_err();
        assert!(
            matches!(&e, wgpu_policy_loss::Error::InvalidArgument { arg: a, .. } if *a == arg),
            "{cfg:?}: {e}"
        );
    };
    bad(
        LossConfig {
            kl_cov_ratio: 0.0,
            ..d
        },
        "kl_cov_ratio",
    );
    bad(
        LossConfig {
            clip_cov_ratio: 1.5,
            ..d
        },
        "clip_cov_ratio",
    );
    bad(LossConfig { tau_neg: -1.0, ..d }, "tau_neg");
    bad(LossConfig { tau_pos: 0.0, ..d }, "tau_pos");
    bad(
        LossConfig {
            clip_cov_lb: 3.0,
            clip_cov_ub: 2.0,
            ..d
        },
        "clip_cov_ub",
    );
    bad(
        LossConfig {
            top_entropy_quantile: Some(0.0),
            ..d
        },
        "top_entropy_quantile",
    );
    bad(
        LossConfig {
            top_entropy_renormalize: true,
            ..d
        },
        "top_entropy_renormalize",
    );
    let rc = RolloutCorrection {
        threshold: 2.0,
        threshold_lower: Some(3.0),
        ..RolloutCorrection::new(RolloutLevel::Token, RolloutMode::Truncate)
    };
    bad(
        LossConfig {
            rollout_correction: Some(rc),
            ..d
        },
        "rollout_is_threshold_lower",
    );
    // a rollout correction without the sampler's log-probs
    let case = LossCase::new(79, 2, 3, 17);
    let cfg = LossConfig {
        rollout_correction: Some(RolloutCorrection::new(
            RolloutLevel::Token,
            RolloutMode::Mask,
        )),
        ..d
    };
    let e = contexts()[0]
        .policy_loss(
            &cfg,
            &case.batch(HostLogits::F32(&case.logits), ALL_INPUTS),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(
            &e,
            wgpu_policy_loss::Error::InvalidArgument {
                arg: "rollout_logprobs",
                ..
            }
        ),
        "{e}"
    );
}
