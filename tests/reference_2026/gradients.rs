//! Gradients that are the loss's derivative, and losses by hand.

use super::*;

#[test]
fn dro_gradient_matches_finite_differences() {
    for seed in [1u64, 2] {
        let d = data(seed);
        for agg in LossAggMode::ALL {
            for (beta_d, beta, gamma, kl) in [
                (0.3, 0.0, 0.0, KlEstimator::K3),
                (2.0, 0.2, 0.03, KlEstimator::K1),
                (1.0, 0.1, 0.0, KlEstimator::Abs),
            ] {
                let cfg = LossConfig {
                    mode: M::Dro,
                    dro_beta: Some(beta_d),
                    loss_agg_mode: agg,
                    kl_coef: beta,
                    entropy_coeff: gamma,
                    kl_loss_type: kl,
                    ..base()
                };
                fd(&cfg, &d, false, None);
                fd(&cfg, &d, true, None);
                let m = run(&cfg, &d.b(), None).metrics;
                assert_eq!((m.pg_clipfrac, m.pg_clipfrac_lower), (0.0, 0.0));
                assert!(m.ppo_kl != 0.0);
            }
        }
    }
}

#[test]
fn geo_mean_gradient_matches_finite_differences() {
    for seed in [1u64, 2] {
        let d0 = data(seed);
        let rollout = rollout_near(&d0);
        for d in [d0.clone(), d0.with_adv(&PER_TOKEN)] {
            for agg in LossAggMode::ALL {
                for rc in rollouts() {
                    let cfg = LossConfig {
                        mode: M::GeoMean,
                        loss_agg_mode: agg,
                        kl_coef: 0.1,
                        entropy_coeff: 0.02,
                        rollout_correction: rc,
                        ..base()
                    };
                    fd(&cfg, &d, false, Some(&rollout));
                    fd(&cfg, &d, true, Some(&rollout));
                }
            }
        }
    }
}

/// TRL's sequence level for `ppo_clip` (plain, dual-clip, δ) and `sapo`: the gradient
/// through the mean of `s_b`, with per-token weights that differ along a sequence
/// (rollout weights, the entropy mask, the off-policy mask, per-token advantages).
#[test]
fn sequence_level_gradient_matches_finite_differences() {
    let clips: [(PolicyLossMode, Option<f32>, Option<f32>); 5] = [
        (M::PpoClip, None, None),
        (M::PpoClip, Some(3.0), None),
        (M::PpoClip, None, Some(1.1)),
        (M::PpoClip, None, Some(2.5)),
        (M::Sapo, None, None),
    ];
    for seed in [3u64, 4] {
        let d0 = data(seed);
        let near = rollout_near(&d0);
        let shifted = rollout_shifted(&d0, 1.0);
        for d in [d0.clone(), d0.with_adv(&PER_TOKEN)] {
            for agg in LossAggMode::ALL {
                for (mode, c, delta) in clips {
                    let cfg = LossConfig {
                        mode,
                        clip_ratio_c: c,
                        delta,
                        importance_sampling_level: SEQ_LEVEL,
                        loss_agg_mode: agg,
                        tau_pos: 1.3,
                        tau_neg: 0.8,
                        kl_coef: 0.1,
                        entropy_coeff: 0.02,
                        ..base()
                    };
                    for (opt, rollout) in sequence_options(&cfg, &near, &shifted) {
                        fd(&opt, &d, false, rollout);
                        fd(&opt, &d, true, rollout);
                    }
                }
            }
        }
    }
}

/// `cfg` alone and with each per-token weight: rollout weights, the entropy mask
/// (renormalised too), the off-policy mask (σ one above logp, θ 0.5: every sequence
/// with A < 0 dropped), the mask with the rollout correction.
fn sequence_options<'a>(
    cfg: &LossConfig,
    near: &'a [f64],
    shifted: &'a [f64],
) -> Vec<(LossConfig, Option<&'a [f64]>)> {
    let token = rollout_cfg(RolloutLevel::Token, RolloutMode::Truncate);
    vec![
        (*cfg, None),
        (
            LossConfig {
                rollout_correction: token,
                ..*cfg
            },
            Some(near),
        ),
        (
            LossConfig {
                top_entropy_quantile: Some(0.6),
                top_entropy_renormalize: cfg.loss_agg_mode != LossAggMode::TokenMean,
                ..*cfg
            },
            None,
        ),
        (
            LossConfig {
                off_policy_mask_threshold: Some(0.5),
                ..*cfg
            },
            Some(shifted),
        ),
        (
            LossConfig {
                off_policy_mask_threshold: Some(0.5),
                rollout_correction: rollout_cfg(RolloutLevel::Token, RolloutMode::Mask),
                ..*cfg
            },
            Some(shifted),
        ),
    ]
}

/// `d` with one row's ratio far below the ±20 clamp (old = logp + 25) and sequence 2's
/// mean log-ratio too: the clamps' derivatives are 0 (small values keep the central
/// differences exact enough).
fn clamped_data(seed: u64) -> Data {
    let mut d = data(seed);
    let logp = d.logp(1.0);
    d.old[2] = logp[2] + 25.0;
    for r in 8..12 {
        d.old[r] = logp[r] + 25.0;
    }
    d
}

#[test]
fn bias_corrected_kl_gradient_matches_finite_differences() {
    let token_level = [
        M::Reinforce,
        M::PpoClip,
        M::Sapo,
        M::GeoMean,
        M::Dro,
        M::KlCov,
    ];
    let kls = KlEstimator::ALL
        .into_iter()
        .filter(|k| !k.straight_through());
    for d in [data(5), clamped_data(6)] {
        for kl in kls.clone() {
            for agg in LossAggMode::ALL {
                let cfg = LossConfig {
                    kl_loss_type: kl,
                    kl_coef: 0.3,
                    use_bias_correction_kl: true,
                    loss_agg_mode: agg,
                    dro_beta: Some(0.5),
                    kl_cov_ratio: 0.3,
                    ..base()
                };
                let seq = [
                    LossConfig {
                        importance_sampling_level: SEQ_LEVEL,
                        ..cfg
                    },
                    LossConfig {
                        importance_sampling_level: SEQ_LEVEL,
                        mode: M::Sapo,
                        ..cfg
                    },
                    // per-sequence advantages: gspo's gradient is the derivative
                    LossConfig {
                        mode: M::Gspo,
                        ..cfg
                    },
                ];
                let token = token_level.map(|mode| LossConfig { mode, ..cfg });
                for c in token.iter().chain(&seq) {
                    fd(c, &d, false, None);
                    fd(c, &d, true, None);
                }
            }
        }
    }
}

#[test]
fn abs_kl_and_token_sum_gradient_matches_finite_differences() {
    let modes: [(PolicyLossMode, ImportanceSamplingLevel); 7] = [
        (M::Reinforce, Default::default()),
        (M::PpoClip, Default::default()),
        (M::GeoMean, Default::default()),
        (M::Dro, Default::default()),
        (M::Gspo, Default::default()),
        (M::PpoClip, SEQ_LEVEL),
        (M::Sapo, SEQ_LEVEL),
    ];
    let d = data(7);
    let rollout = rollout_near(&d);
    for (mode, level) in modes {
        for (agg, kl) in [
            (LossAggMode::TokenSum, KlEstimator::Abs),
            (LossAggMode::TokenSum, KlEstimator::K3),
            (LossAggMode::SeqMeanTokenMean, KlEstimator::Abs),
            (LossAggMode::TokenMean, KlEstimator::Abs),
        ] {
            for bias in [false, true] {
                let cfg = LossConfig {
                    mode,
                    importance_sampling_level: level,
                    loss_agg_mode: agg,
                    kl_loss_type: kl,
                    kl_coef: 0.4,
                    entropy_coeff: 0.05,
                    dro_beta: Some(0.5),
                    use_bias_correction_kl: bias,
                    ..base()
                };
                fd(&cfg, &d, false, None);
                fd(&cfg, &d, true, None);
                let token = LossConfig {
                    rollout_correction: rollout_cfg(RolloutLevel::Token, RolloutMode::Truncate),
                    ..cfg
                };
                if mode != M::Gspo {
                    fd(&token, &d, false, Some(&rollout));
                }
            }
        }
    }
}

#[test]
fn delta_gradient_matches_finite_differences() {
    for seed in [8u64, 9] {
        let d = data(seed);
        for mode in [M::PpoClip, M::Gspo] {
            for delta in [1.05f32, 1.1, 1.5, 3.0] {
                for agg in LossAggMode::ALL {
                    let cfg = LossConfig {
                        mode,
                        delta: Some(delta),
                        loss_agg_mode: agg,
                        kl_coef: 0.1,
                        ..base()
                    };
                    fd(&cfg, &d, false, None);
                    fd(&cfg, &d, true, None);
                    if mode == M::PpoClip {
                        fd(&cfg, &d.with_adv(&PER_TOKEN), false, None);
                    }
                }
            }
        }
    }
}

/// GMPO's loss by hand: `Σ_b q_b·(−Ā_b·ρ_b) / B` over the non-empty sequences, with
/// `q_b` the geometric mean of the rollout weights (`q_t + 1e-10`).
#[test]
fn geo_mean_loss_by_hand() {
    let (e_lo, e_hi) = (0.2f32 as f64, 0.28f32 as f64);
    let d0 = data(20);
    let rollout = rollout_near(&d0);
    for d in [d0.clone(), d0.with_adv(&PER_TOKEN)] {
        for rc in rollouts() {
            let cfg = LossConfig {
                mode: M::GeoMean,
                rollout_correction: rc,
                ..base()
            };
            let got = run(&cfg, &d.b(), Some(&rollout));
            let mut want = 0.0;
            for s in [0usize, 2] {
                let rows: Vec<usize> = (4 * s..4 * s + 4).filter(|&r| d.mask[r] > 0.0).collect();
                let n: f64 = rows.iter().map(|&r| d.mask[r]).sum();
                let mean = |f: &dyn Fn(usize) -> f64| {
                    rows.iter().map(|&r| d.mask[r] * f(r)).sum::<f64>() / n
                };
                let kappa = |r: usize| {
                    let (a, x) = (d.adv_of(r), got.logp[r] - d.old[r]);
                    match a {
                        a if a > 0.0 => x.min(e_hi),
                        a if a < 0.0 => x.max(-e_lo),
                        _ => 0.0,
                    }
                };
                let rho = mean(&kappa).exp();
                let abar = mean(&|r| d.adv_of(r));
                let q = match rc {
                    Some(_) => mean(&|r| (got.rollout_weight[r] + 1e-10).ln()).exp(),
                    None => 1.0,
                };
                want += q * -abar * rho / 3.0;
            }
            assert!(
                (got.loss - want).abs() < 1e-12,
                "{rc:?}: {} vs {want}",
                got.loss
            );
        }
    }
}

/// The bias-corrected KL by hand, with A = 0 (no policy term): at the token level
/// `G = β·w·(r·∂kl + r·kl)`, the second term 0 where the ratio's clamp is active (row
/// 0, `r = e^20`); at the sequence level `G = β·w·s_b·∂kl` plus the addend, which is 0
/// where the mean's clamp is active (sequence 0).
#[test]
fn bias_corrected_kl_by_hand() {
    let mut d = data(21).with_adv(&[0.0; 3]);
    let logp = d.logp(1.0);
    for r in 0..4 {
        d.old[r] = logp[r] - 25.0;
    }
    let beta = 0.3f32 as f64;
    let n: f64 = d.mask.iter().sum();
    for seq_level in [false, true] {
        let cfg = LossConfig {
            kl_loss_type: KlEstimator::K1,
            kl_coef: 0.3,
            use_bias_correction_kl: true,
            importance_sampling_level: match seq_level {
                true => SEQ_LEVEL,
                false => ImportanceSamplingLevel::Token,
            },
            ..base()
        };
        let got = run(&cfg, &d.b(), None);
        let s = seq_ratios(&d, &got.logp);
        let mut want_g = [0.0; ROWS];
        // k1: kl = logp − ref, ∂kl = 1
        let kl = |r: usize| got.logp[r] - d.refp[r];
        for r in (0..ROWS).filter(|&r| d.mask[r] > 0.0) {
            let w = d.mask[r] / n;
            want_g[r] = match seq_level {
                false => {
                    let x = got.logp[r] - d.old[r];
                    let rt = x.clamp(-20.0, 20.0).exp();
                    let through_r = if x.abs() > 20.0 { 0.0 } else { rt * kl(r) };
                    beta * w * (rt + through_r)
                }
                true => {
                    let b = r / 4;
                    let rows = (4 * b..4 * b + 4).filter(|&t| d.mask[t] > 0.0);
                    let n_b: f64 = rows.clone().map(|t| d.mask[t]).sum();
                    let sum: f64 = rows.map(|t| d.mask[t] / n * kl(t)).sum();
                    let addend = if b == 0 {
                        0.0
                    } else {
                        s[b] * d.mask[r] / n_b * sum
                    };
                    beta * (w * s[b] + addend)
                }
            };
        }
        for r in 0..ROWS {
            let x = &d.logits[r * V..(r + 1) * V];
            let p = wgpu_policy_loss::reference::softmax(x, 1.0);
            for v in 0..V {
                let onehot = (v == d.targets[r] as usize) as u8 as f64;
                let want = want_g[r] * (onehot - p[v]);
                let have = got.grad[r * V + v];
                let tol = 1e-12 * (1.0 + want.abs());
                assert!(
                    (have - want).abs() < tol,
                    "{seq_level} row {r}: {have} vs {want}"
                );
            }
        }
    }
}
