//! The off-policy mask, δ, the sequence-level ratio, GMPO, LUSPO and token-sum: the
//! equivalences and edge cases of docs/MATH.md.

use super::*;

#[test]
fn off_policy_mask_with_a_huge_threshold_is_no_mask() {
    let d = data(6);
    let near = rollout_near(&d);
    let token = rollout_cfg(RolloutLevel::Token, RolloutMode::Truncate);
    for (mode, level) in [
        (M::PpoClip, Default::default()),
        (M::Reinforce, Default::default()),
        (M::Cispo, SEQ_LEVEL),
        (M::Sapo, SEQ_LEVEL),
        (M::Gspo, Default::default()),
        (M::Vespo, Default::default()),
        (M::DppoKl, Default::default()),
    ] {
        for (rc, rollout, old) in [
            (None, Some(&near[..]), true),
            (token, Some(&near[..]), true),
            (None, None, true),
            (None, None, false),
        ] {
            let cfg = LossConfig {
                mode,
                importance_sampling_level: level,
                rollout_correction: rc,
                kl_coef: 0.1,
                ..base()
            };
            let masked = LossConfig {
                off_policy_mask_threshold: Some(1e30),
                ..cfg
            };
            let b = d.batch(&d.logits, old.then_some(&d.old[..]));
            let got = run(&masked, &b, rollout);
            let want = run(&cfg, &b, rollout);
            same_bits(&got, &want, &format!("{masked:?}"));
            assert_eq!(got.metrics.off_policy_mask_frac, 1.0);
        }
    }
}

/// σ far above logp and θ = 0: every sequence with `A < 0` loses its policy term
/// (the result of mode `reinforce` with A = 0), whatever the mode.
#[test]
fn off_policy_mask_drops_sequences_with_negative_advantages() {
    let d = data(7).with_adv(&[-0.8, -1.3, -0.6]);
    let sigma = rollout_shifted(&d, 5.0);
    let zero = [0.0; 3];
    for mode in M::ALL.into_iter().filter(|&m| m != M::GeoMean) {
        let cfg = LossConfig {
            mode,
            dro_beta: Some(0.5),
            kl_cov_ratio: 0.3,
            kl_coef: 0.2,
            entropy_coeff: 0.03,
            off_policy_mask_threshold: Some(0.0),
            ..base()
        };
        let unmasked = LossConfig {
            off_policy_mask_threshold: None,
            ..cfg
        };
        let want = reinforce_with(&unmasked, &d, &zero, None);
        // σ from the sampler's log-probs (no rollout correction), then from old's
        let got = run(&cfg, &d.b(), Some(&sigma));
        close(&got, &want, 1e-12, &format!("{mode:?} σ = rollout"));
        assert_eq!(got.metrics.off_policy_mask_frac, 0.0);
        let mut far_old = d.clone();
        far_old.old = sigma.clone();
        let got = run(&cfg, &far_old.b(), None);
        let want = reinforce_with(&unmasked, &far_old, &zero, None);
        close(&got, &want, 1e-12, &format!("{mode:?} σ = old"));
        // no σ at all (no old, no rollout log-probs): κ̄ = 0 ≤ θ keeps everything
        let no_old = d.batch(&d.logits, None);
        same_bits(
            &run(&cfg, &no_old, None),
            &run(&unmasked, &no_old, None),
            "no σ",
        );
    }
}

#[test]
fn off_policy_mask_keeps_positive_advantages_and_counts_its_share() {
    let d = data(8).with_adv(&[0.8, -1.3, -0.6]);
    let sigma = rollout_shifted(&d, 5.0);
    let cfg = LossConfig {
        off_policy_mask_threshold: Some(0.0),
        kl_coef: 0.2,
        ..base()
    };
    let got = run(&cfg, &d.b(), Some(&sigma));
    let unmasked = LossConfig {
        off_policy_mask_threshold: None,
        ..cfg
    };
    let want = run(&unmasked, &d.with_adv(&[0.8, -1.3, 0.0]).b(), None);
    close(&got, &want, 1e-12, "sequence 2 dropped");
    let frac = got.metrics.off_policy_mask_frac;
    assert!((frac - 3.0 / 6.5).abs() < 1e-15, "{frac}");
    let kept: Vec<f64> = (0..ROWS).map(|r| (r < 8) as u8 as f64).collect();
    assert_eq!(got.off_policy_kept, kept);
    // per-token advantages: the rows with A ≥ 0 of a dropped sequence stay
    let d = d.with_adv(&PER_TOKEN);
    let got = run(&cfg, &d.b(), Some(&sigma));
    for r in 0..ROWS {
        let want = if d.mask[r] > 0.0 && PER_TOKEN[r] < 0.0 {
            0.0
        } else {
            1.0
        };
        assert_eq!(got.off_policy_kept[r], want, "row {r}");
    }
}

/// The mask reads the sampler's log-probs: a non-finite one on a masked-in row is bad
/// input, and a NaN one poisons its sequence; without the mask (and the correction)
/// they are not read.
#[test]
fn off_policy_mask_reads_the_rollout_logprobs() {
    let d = data(9);
    let mut sigma = rollout_near(&d);
    sigma[9] = f64::NAN;
    sigma[5] = f64::INFINITY; // masked out: never read
    let cfg = LossConfig {
        off_policy_mask_threshold: Some(0.1),
        ..base()
    };
    let got = run(&cfg, &d.b(), Some(&sigma));
    assert_eq!(got.metrics.invalid_input_rows, 1.0);
    assert_eq!(
        got.metrics.first_invalid_input,
        Some((RowInput::RolloutLogprobs, 9))
    );
    assert!(got.loss.is_nan());
    assert!(got.grad[8 * V..].iter().all(|g| g.is_nan()));
    assert!(got.grad[..3 * V].iter().all(|g| g.is_finite()));
    for r in 8..12 {
        assert!(got.off_policy_kept[r].is_nan(), "row {r}");
    }
    let off = LossConfig {
        off_policy_mask_threshold: None,
        ..cfg
    };
    let got = run(&off, &d.b(), Some(&sigma));
    assert_eq!(got.metrics.invalid_input_rows, 0.0);
    assert!(got.loss.is_finite());
    // +inf on a masked-in row: counted, and the sequence (A < 0) dropped
    sigma[9] = f64::INFINITY;
    let got = run(&cfg, &d.b(), Some(&sigma));
    assert_eq!(
        got.metrics.first_invalid_input,
        Some((RowInput::RolloutLogprobs, 9))
    );
    assert_eq!(&got.off_policy_kept[8..], &[0.0; 4]);
}

#[test]
fn delta_above_one_plus_clip_high_is_dual_clip() {
    for seed in [1u64, 2, 3] {
        let d0 = data(seed);
        for d in [d0.clone(), d0.with_adv(&PER_TOKEN_NONZERO)] {
            for (mode, level) in [
                (M::PpoClip, Default::default()),
                (M::Gspo, Default::default()),
                (M::PpoClip, SEQ_LEVEL),
            ] {
                for delta in [1.5f32, 2.5] {
                    for agg in LossAggMode::ALL {
                        let cfg = LossConfig {
                            mode,
                            importance_sampling_level: level,
                            loss_agg_mode: agg,
                            kl_coef: 0.1,
                            entropy_coeff: 0.02,
                            ..base()
                        };
                        let two_sided = LossConfig {
                            delta: Some(delta),
                            ..cfg
                        };
                        let dual = LossConfig {
                            clip_ratio_c: Some(delta),
                            ..cfg
                        };
                        let got = run(&two_sided, &d.b(), None);
                        let want = run(&dual, &d.b(), None);
                        same_bits(&got, &want, &format!("{two_sided:?}"));
                    }
                }
            }
        }
    }
}

#[test]
fn delta_decides_by_the_tie_rule() {
    // ε 0.2 / 0.2, δ = 1.5: (A, r) → (l, g, pg_clipfrac, pg_clipfrac_lower)
    let cfg = LossConfig {
        delta: Some(1.5),
        ..LossConfig::default()
    };
    let cases: [(f64, f64, f64, f64, bool, bool); 8] = [
        (1.0, 1.1, -1.1, -1.1, false, false),
        (1.0, 1.3, -1.2, 0.0, true, false),
        (1.0, 2.0, -1.2, 0.0, true, false),
        (1.0, 0.5, -0.5, -0.5, false, false),
        (-1.0, 1.3, 1.3, 1.3, false, false),
        (-1.0, 2.0, 1.5, 0.0, false, true),
        (-1.0, 0.5, 0.8, 0.0, true, false),
        // A = 0 ties: the first term, capped (the tie rule README lists)
        (0.0, 2.0, 0.0, 0.0, false, true),
    ];
    for (a, r, l, g, clip, low) in cases {
        let t = clipped_term(&cfg, a, r);
        let what = format!("A {a} r {r}: {t:?}");
        assert!((t.l - l).abs() < 1e-6 && (t.g - g).abs() < 1e-6, "{what}");
        assert_eq!((t.clipped, t.dual_clipped), (clip, low), "{what}");
    }
    // δ inside the band (1.1 < 1 + ε_high): the band's term moves past δ
    let cfg = LossConfig {
        delta: Some(1.1),
        ..cfg
    };
    let t = clipped_term(&cfg, -1.0, 1.15);
    assert!(
        (t.l - 1.15).abs() < 1e-6 && (t.g - 1.15).abs() < 1e-6,
        "{t:?}"
    );
    assert!(!t.clipped && !t.dual_clipped);
    assert!(clipped_term(&cfg, 1.0, f64::NAN).l.is_nan());
}

#[test]
fn sequence_level_is_gspo_with_sequence_advantages() {
    for seed in [1u64, 2] {
        let d = data(seed);
        for (c, delta) in [
            (None, None),
            (Some(3.0), None),
            (None, Some(1.5)),
            (None, Some(2.5)),
        ] {
            for agg in LossAggMode::ALL {
                let cfg = LossConfig {
                    clip_ratio_c: c,
                    delta,
                    loss_agg_mode: agg,
                    kl_coef: 0.1,
                    entropy_coeff: 0.02,
                    ..base()
                };
                let seq = LossConfig {
                    importance_sampling_level: SEQ_LEVEL,
                    ..cfg
                };
                let gspo = LossConfig {
                    mode: M::Gspo,
                    ..cfg
                };
                for old in [true, false] {
                    let b = d.batch(&d.logits, old.then_some(&d.old[..]));
                    let got = run(&seq, &b, None);
                    let want = run(&gspo, &b, None);
                    close(&got, &want, 1e-12, &format!("{seq:?}"));
                    assert_eq!(got.metrics, want.metrics);
                }
            }
        }
    }
}

#[test]
fn cispo_sequence_level_is_reinforce_with_the_clipped_sequence_ratio() {
    for seed in [1u64, 2] {
        let d0 = data(seed);
        for d in [d0.clone(), d0.with_adv(&PER_TOKEN)] {
            for agg in LossAggMode::ALL {
                let cfg = LossConfig {
                    mode: M::Cispo,
                    importance_sampling_level: SEQ_LEVEL,
                    loss_agg_mode: agg,
                    clip_ratio_low: 0.1,
                    kl_coef: 0.1,
                    ..base()
                };
                let got = run(&cfg, &d.b(), None);
                let s = seq_ratios(&d, &got.logp);
                let (lo, hi) = (1.0 - 0.1f32 as f64, 1.0 + 0.28f32 as f64);
                let c = |r: usize| s[r / 4].clamp(lo, hi);
                let adv: Vec<f64> = (0..ROWS).map(|r| c(r) * d.adv_of(r)).collect();
                close(&got, &reinforce_with(&cfg, &d, &adv, None), 1e-12, "cispo");
                let n: f64 = d.mask.iter().sum();
                let clip: f64 = (0..ROWS)
                    .filter(|&r| d.mask[r] > 0.0)
                    .map(|r| d.mask[r] * (c(r) != s[r / 4]) as u8 as f64)
                    .sum();
                assert!((got.metrics.pg_clipfrac - clip / n).abs() < 1e-12);
            }
        }
    }
}

/// One token per sequence with every log-ratio inside the band: `ρ_b = r_t`,
/// `Ā_b = A_t`, `w' = 1/B`, so GMPO is `ppo_clip` over `seq-mean-token-mean` counting
/// every sequence; outside the band its loss is `−A·e^{ε}` per token, and the clip
/// metrics count by the sign of A.
#[test]
fn geo_mean_with_one_token_per_sequence() {
    let mut d = data(10);
    d.rows_per_seq = 1;
    d.mask = vec![1., 1., 0., 1., 1., 1., 0.5, 1., 0., 1., 1., 1.];
    d.adv = PER_TOKEN_NONZERO.to_vec();
    let logp = d.logp(1.0);
    let mut next = lcg(11);
    d.old = logp.iter().map(|l| l + 0.1 * next()).collect();
    for agg in LossAggMode::ALL {
        let geo = LossConfig {
            mode: M::GeoMean,
            loss_agg_mode: agg,
            ..base()
        };
        let ppo = LossConfig {
            loss_agg_mode: LossAggMode::SeqMeanTokenMean,
            count_empty_sequences: true,
            ..base()
        };
        close(
            &run(&geo, &d.b(), None),
            &run(&ppo, &d.b(), None),
            1e-12,
            "geo",
        );
    }
    // rows 0, 1, 3 outside the band
    for (r, x) in [(0usize, 0.5), (1, 0.5), (3, -0.5)] {
        d.old[r] = logp[r] - x;
    }
    let geo = LossConfig {
        mode: M::GeoMean,
        ..base()
    };
    let got = run(&geo, &d.b(), None);
    let (mut want, mut hi, mut lo) = (0.0, 0.0, 0.0);
    for r in (0..ROWS).filter(|&r| d.mask[r] > 0.0) {
        let (a, dr) = (d.adv[r], logp[r] - d.old[r]);
        let (e_lo, e_hi) = (0.2f32 as f64, 0.28f32 as f64);
        let kappa = if a > 0.0 { dr.min(e_hi) } else { dr.max(-e_lo) };
        want += -a * kappa.exp() / ROWS as f64;
        let outside = !(-e_lo..=e_hi).contains(&dr);
        hi += d.mask[r] * (outside && a > 0.0) as u8 as f64;
        lo += d.mask[r] * (outside && a < 0.0) as u8 as f64;
    }
    assert!((got.loss - want).abs() < 1e-12, "{} vs {want}", got.loss);
    let n: f64 = d.mask.iter().sum();
    assert!((got.metrics.pg_clipfrac - hi / n).abs() < 1e-12);
    assert!((got.metrics.pg_clipfrac_lower - lo / n).abs() < 1e-12);
    assert!(hi > 0.0 && lo > 0.0);
    fd(&geo, &d, false, None);
}

/// An empty sequence adds 0 to GMPO's mean over sequences but counts in B: without it
/// the loss and gradient scale by B / (B − 1). Junk on its masked-out rows is not read.
#[test]
fn geo_mean_empty_sequence_adds_zero() {
    let mut d = data(12);
    for x in &mut d.logits[4 * V..8 * V] {
        *x = f64::NAN;
    }
    d.old[5] = f64::NAN;
    let mut two = d.clone();
    two.logits = [&d.logits[..4 * V], &d.logits[8 * V..]].concat();
    two.targets = [&d.targets[..4], &d.targets[8..]].concat();
    two.mask = [&d.mask[..4], &d.mask[8..]].concat();
    two.old = [&d.old[..4], &d.old[8..]].concat();
    two.refp = [&d.refp[..4], &d.refp[8..]].concat();
    two.adv = vec![d.adv[0], d.adv[2]];
    for agg in LossAggMode::ALL {
        let cfg = LossConfig {
            mode: M::GeoMean,
            loss_agg_mode: agg,
            ..base()
        };
        let three = run(&cfg, &d.b(), None);
        let got = run(&cfg, &two.b(), None);
        assert!((three.loss * 3.0 - got.loss * 2.0).abs() < 1e-12);
        assert!(three.grad[4 * V..8 * V].iter().all(|&g| g == 0.0));
        let kept = [&three.grad[..4 * V], &three.grad[8 * V..]].concat();
        for (a, b) in kept.iter().zip(&got.grad) {
            assert!((a * 3.0 - b * 2.0).abs() < 1e-12, "{agg:?}");
        }
    }
}

#[test]
fn geo_mean_nan_poisons_its_sequence() {
    let cfg = LossConfig {
        mode: M::GeoMean,
        ..base()
    };
    let mut adv = PER_TOKEN;
    adv[1] = f64::NAN;
    let d = data(13).with_adv(&adv);
    let got = run(&cfg, &d.b(), None);
    assert!(got.loss.is_nan());
    assert!(got.grad[..3 * V].iter().all(|g| g.is_nan()));
    assert!(got.grad[8 * V..].iter().all(|g| g.is_finite()));
    assert_eq!(
        got.metrics.first_invalid_input,
        Some((RowInput::Advantages, 1))
    );
    // a NaN logit on a masked-in row: its log-ratio is NaN
    let mut d = data(13);
    d.logits[9 * V + 2] = f64::NAN;
    let got = run(&cfg, &d.b(), None);
    assert!(got.grad[8 * V..].iter().all(|g| g.is_nan()));
    assert!(got.grad[..3 * V].iter().all(|g| g.is_finite()));
}

/// Where the mean log-ratio passes the ±20 clamp, the gradient through the mean is 0:
/// sequence 0 (A > 0, `s_b ≈ 0`, the selected term moving) gets no gradient at all.
#[test]
fn sequence_ratio_clamp_zeroes_the_addend() {
    let mut d = data(14);
    let logp = d.logp(1.0);
    for mode in [M::PpoClip, M::Sapo] {
        let cfg = LossConfig {
            mode,
            importance_sampling_level: SEQ_LEVEL,
            ..base()
        };
        for (shift, zero) in [(25.0, true), (19.0, false)] {
            for r in 0..4 {
                d.old[r] = logp[r] + shift;
            }
            let got = run(&cfg, &d.b(), None);
            let g0 = &got.grad[..4 * V];
            assert_eq!(g0.iter().all(|&g| g == 0.0), zero, "{mode:?} shift {shift}");
            assert!(got.grad[8 * V..].iter().any(|&g| g != 0.0));
        }
    }
}

#[test]
fn luspo_is_ppo_clip_at_the_sequence_level_over_every_sequence() {
    let luspo = base().with_loss_type(TrlLossType::Luspo, None).unwrap();
    assert_eq!(luspo.mode, M::PpoClip);
    assert_eq!(luspo.importance_sampling_level, SEQ_LEVEL);
    assert_eq!(luspo.loss_agg_mode, LossAggMode::SeqMeanTokenSum);
    assert!(luspo.count_empty_sequences);
    let vespo = base().with_loss_type(TrlLossType::Vespo, None).unwrap();
    assert_eq!(
        (vespo.mode, vespo.loss_agg_mode),
        (M::Vespo, LossAggMode::TokenMean)
    );
    // w = m / B with B = 3 (sequence 1 empty): token-sum's loss and gradient over 3
    let d = data(15);
    let cfg = LossConfig {
        kl_coef: 0.1,
        entropy_coeff: 0.02,
        ..luspo
    };
    let sum = LossConfig {
        loss_agg_mode: LossAggMode::TokenSum,
        ..cfg
    };
    let got = run(&cfg, &d.b(), None);
    let want = run(&sum, &d.b(), None);
    assert!((got.loss * 3.0 - want.loss).abs() < 1e-12);
    for (a, b) in got.grad.iter().zip(&want.grad) {
        assert!((a * 3.0 - b).abs() < 1e-12);
    }
    fd(&cfg, &d, false, None);
}

#[test]
fn token_sum_is_the_masked_sum() {
    let d = data(16);
    let cfg = LossConfig {
        mode: M::Reinforce,
        loss_agg_mode: LossAggMode::TokenSum,
        kl_loss_type: KlEstimator::Abs,
        kl_coef: 0.3,
        entropy_coeff: 0.05,
        ..base()
    };
    let got = run(&cfg, &d.b(), None);
    let want: f64 = (0..ROWS)
        .filter(|&r| d.mask[r] > 0.0)
        .map(|r| {
            let kl = (got.logp[r] - d.refp[r]).abs();
            let (beta, gamma) = (0.3f32 as f64, 0.05f32 as f64);
            d.mask[r] * (-d.adv_of(r) * got.logp[r] + beta * kl - gamma * got.entropy[r])
        })
        .sum();
    assert!((got.loss - want).abs() < 1e-12, "{} vs {want}", got.loss);
}
