//! The CPU reference itself, on cases with closed forms, so that the GPU tests compare
//! against something known to be right.

mod common;

use wgpu_policy_loss::reference::{row_stats, row_stats_batch};

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + b.abs())
}

#[test]
fn uniform_row() {
    for v in [1usize, 2, 7, 151936] {
        let r = row_stats(&vec![3.25; v], v / 2, 1.0);
        let ln_v = (v as f64).ln();
        assert!(near(r.lse, 3.25 + ln_v), "{r:?}");
        assert!(near(r.logp, -ln_v), "{r:?}");
        assert!(near(r.entropy, ln_v), "{r:?}");
    }
}

#[test]
fn two_tokens_with_temperature() {
    // p = sigmoid((a - b)/τ)
    let (a, b, tau) = (2.0f64, -1.0f64, 1.5f64);
    let r = row_stats(&[a, b], 0, tau);
    let p = 1.0 / (1.0 + (-(a - b) / tau).exp());
    assert!(near(r.logp, p.ln()));
    assert!(near(r.entropy, -(p * p.ln() + (1.0 - p) * (1.0 - p).ln())));
    assert!(near(r.lse, ((a / tau).exp() + (b / tau).exp()).ln()));
}

#[test]
fn huge_logits_do_not_overflow() {
    let r = row_stats(&[1e4, 1e4, -1e4], 2, 1.0);
    assert!(near(r.lse, 1e4 + 2f64.ln()));
    assert!(near(r.entropy, 2f64.ln()));
    assert!(near(r.logp, -2e4 - 2f64.ln()));
}

#[test]
fn non_finite_entries() {
    let ninf = f64::NEG_INFINITY;
    let r = row_stats(&[ninf, 0.0, 0.0, ninf], 1, 1.0);
    assert!(near(r.lse, 2f64.ln()) && near(r.entropy, 2f64.ln()) && near(r.logp, -(2f64.ln())));
    assert_eq!(row_stats(&[ninf, 0.0], 0, 1.0).logp, ninf);
    let all_ninf = row_stats(&[ninf; 4], 0, 1.0);
    assert!(all_ninf.lse == ninf && all_ninf.logp.is_nan() && all_ninf.entropy.is_nan());
    let nan = row_stats(&[0.0, f64::NAN], 0, 1.0);
    assert!(nan.lse.is_nan() && nan.logp.is_nan() && nan.entropy.is_nan());
    let inf = row_stats(&[f64::INFINITY, 1.0, f64::INFINITY], 1, 1.0);
    assert!(inf.lse == f64::INFINITY && inf.logp == ninf && near(inf.entropy, 2f64.ln()));
}

#[test]
fn batch_matches_rows() {
    let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
    let b = row_stats_batch(&x, 4, &[0, 3, 2], 0.5);
    for (r, s) in b.iter().enumerate() {
        let row: Vec<f64> = x[r * 4..r * 4 + 4].iter().map(|&v| v as f64).collect();
        assert_eq!(*s, row_stats(&row, [0, 3, 2][r], 0.5));
    }
}

mod gradient {
    use wgpu_policy_loss::reference::{policy_loss, policy_loss_with, row_stats, Batch};
    use wgpu_policy_loss::{
        KlEstimator, LossAggMode, LossConfig, PolicyLossMode, RolloutCorrection, RolloutLevel,
        RolloutMode,
    };

    /// A small batch: 3 sequences of 4 rows, V = 6, a masked-out row and an empty sequence.
    struct Data {
        logits: Vec<f64>,
        targets: Vec<u32>,
        mask: Vec<f64>,
        adv: Vec<f64>,
        old: Vec<f64>,
        refp: Vec<f64>,
    }

    const V: usize = 6;
    const ROWS: usize = 12;

    fn data(seed: u64) -> Data {
        // a tiny LCG keeps the reference tests free of GPU and RNG crates
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let logits: Vec<f64> = (0..ROWS * V).map(|_| 2.0 * next()).collect();
        let targets: Vec<u32> = (0..ROWS)
            .map(|r| ((r * 7 + seed as usize) % V) as u32)
            .collect();
        let mask = vec![1., 1., 1., 0., 0., 0., 0., 0., 1., 1., 0.5, 1.];
        let adv = vec![0.8, -1.3, -0.6];
        let old: Vec<f64> = (0..ROWS)
            .map(|r| {
                let lp = row_stats(&logits[r * V..(r + 1) * V], targets[r] as usize, 1.0).logp;
                // some rows far off: ratios above the dual-clip constant
                if r % 4 == 1 {
                    lp - 1.5
                } else {
                    lp + 0.6 * next()
                }
            })
            .collect();
        let refp: Vec<f64> = old.iter().map(|&o| o + 0.4 * next()).collect();
        Data {
            logits,
            targets,
            mask,
            adv,
            old,
            refp,
        }
    }

    fn batch<'a>(d: &'a Data, logits: &'a [f64], old: Option<&'a [f64]>) -> Batch<'a> {
        Batch {
            logits,
            vocab: V,
            rows_per_seq: 4,
            targets: &d.targets,
            mask: &d.mask,
            advantages: &d.adv,
            old_logp: old,
            ref_logp: Some(&d.refp),
        }
    }

    /// Central differences of the reference loss against its analytic gradient, with
    /// old log-probs held fixed (for on-policy: at the current log-probs).
    fn check(cfg: &LossConfig, d: &Data, on_policy: bool) {
        check_with(cfg, d, on_policy, None)
    }

    /// [`check`] with the sampler's log-probs for the rollout correction (whose weights
    /// are constants here: old log-probs are given).
    fn check_with(cfg: &LossConfig, d: &Data, on_policy: bool, rollout: Option<&[f64]>) {
        if cfg.mode == PolicyLossMode::Cispo {
            return check_cispo(cfg, d, rollout);
        }
        let tau = cfg.temperature as f64;
        let base_old: Vec<f64> = if on_policy {
            (0..ROWS)
                .map(|r| row_stats(&d.logits[r * V..(r + 1) * V], d.targets[r] as usize, tau).logp)
                .collect()
        } else {
            d.old.clone()
        };
        let analytic =
            policy_loss_with(cfg, &batch(d, &d.logits, Some(&base_old)), rollout).unwrap();
        if on_policy {
            // on-policy (no old log-probs) gives the same value and gradient
            let plain = policy_loss(cfg, &batch(d, &d.logits, None)).unwrap();
            assert!((plain.loss - analytic.loss).abs() < 1e-12, "{cfg:?}");
            for (a, b) in plain.grad.iter().zip(&analytic.grad) {
                assert!((a - b).abs() < 1e-12, "{cfg:?}");
            }
        }
        let h = 1e-6;
        let mut x = d.logits.clone();
        for i in 0..x.len() {
            let x0 = x[i];
            x[i] = x0 + h;
            let up = policy_loss_with(cfg, &batch(d, &x, Some(&base_old)), rollout)
                .unwrap()
                .loss;
            x[i] = x0 - h;
            let down = policy_loss_with(cfg, &batch(d, &x, Some(&base_old)), rollout)
                .unwrap()
                .loss;
            x[i] = x0;
            let fd = (up - down) / (2.0 * h);
            let an = analytic.grad[i];
            assert!(
                (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
                "{cfg:?} on_policy={on_policy}: ∂loss/∂x[{i}] fd {fd} analytic {an}"
            );
        }
    }

    /// The modes whose gradient is the loss's derivative (or, for `cispo`, checked
    /// through [`check_cispo`]); the detached weights of `dppo_tv`, `dppo_kl` and `vespo`
    /// are checked by their equivalences in tests/reference_2026.rs.
    fn derivative_modes() -> impl Iterator<Item = PolicyLossMode> {
        use PolicyLossMode as M;
        M::ALL
            .into_iter()
            .filter(|m| !matches!(m, M::DppoTv | M::DppoKl | M::Vespo))
    }

    /// `dro` needs its β_D.
    fn with_mode_params(cfg: LossConfig) -> LossConfig {
        LossConfig {
            dro_beta: (cfg.mode == PolicyLossMode::Dro).then_some(0.7),
            ..cfg
        }
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        for mode in derivative_modes() {
            for agg in LossAggMode::ALL {
                // a straight-through estimator's gradient is k2's, not its derivative:
                // tests/reference_2026.rs checks that
                for kl in KlEstimator::ALL
                    .into_iter()
                    .filter(|k| !k.straight_through())
                {
                    for extras in [
                        (1.0, 0.0, 0.0, None),
                        (0.7, 0.3, 0.05, None),
                        (1.3, 0.1, 0.02, Some(3.0)),
                    ] {
                        let cfg = super::common::loss_config(mode, agg, kl, extras);
                        let cfg = with_mode_params(cfg);
                        for seed in [1u64, 2] {
                            let d = data(seed);
                            check(&cfg, &d, false);
                            check(&cfg, &d, true);
                        }
                    }
                }
            }
        }
    }

    /// CISPO's clipped ratio is a detached weight, so its gradient is not the loss's
    /// derivative: it is REINFORCE's with each token's advantage scaled by that weight,
    /// whose own gradient the central differences above check.
    fn check_cispo(cfg: &LossConfig, d: &Data, rollout: Option<&[f64]>) {
        let b = batch(d, &d.logits, Some(&d.old));
        let got = policy_loss_with(cfg, &b, rollout).unwrap();
        let (lo, hi) = (
            1.0 - cfg.clip_ratio_low as f64,
            1.0 + cfg.clip_ratio_high as f64,
        );
        let scaled: Vec<f64> = (0..ROWS)
            .map(|r| {
                let c = (got.logp[r] - d.old[r])
                    .clamp(-20.0, 20.0)
                    .exp()
                    .clamp(lo, hi);
                c * d.adv[r / 4]
            })
            .collect();
        let reinforce = LossConfig {
            mode: PolicyLossMode::Reinforce,
            ..*cfg
        };
        let mut rb = b;
        rb.advantages = &scaled;
        let want = policy_loss_with(&reinforce, &rb, rollout).unwrap();
        assert!((got.loss - want.loss).abs() < 1e-12, "{cfg:?}");
        for (a, w) in got.grad.iter().zip(&want.grad) {
            assert!((a - w).abs() < 1e-12, "{cfg:?}");
        }
    }

    /// The options of the new modes — the covariance selection (with shares large
    /// enough to select), the top-entropy mask (quantile and renormalised top-k), the
    /// rollout correction at every level and mode — against central differences. GSPO
    /// is left out: its gradient is the surrogate of docs/MATH.md#policy-modes-of-2025,
    /// which equals the loss's derivative only while every token of a sequence weighs
    /// the same (the mask and the rollout weights break that).
    #[test]
    fn options_gradient_matches_finite_differences() {
        let rollout: Vec<f64> = {
            let d = data(9);
            d.old
                .iter()
                .zip(&d.refp)
                .map(|(o, r)| o + 0.7 * (r - o))
                .collect()
        };
        let mut configs = Vec::new();
        // (geo_mean takes no entropy mask: tests/reference_2026.rs checks it with the
        // rollout correction)
        for mode in derivative_modes()
            .filter(|&m| !matches!(m, PolicyLossMode::Gspo | PolicyLossMode::GeoMean))
        {
            for agg in LossAggMode::ALL {
                configs.push(with_mode_params(LossConfig {
                    mode,
                    loss_agg_mode: agg,
                    kl_cov_ratio: 0.3,
                    clip_cov_ratio: 0.5,
                    clip_cov_lb: -5.0,
                    clip_cov_ub: 5.0,
                    ppo_kl_coef: 0.2,
                    tau_pos: 1.3,
                    tau_neg: 0.8,
                    top_entropy_quantile: Some(0.6),
                    top_entropy_renormalize: agg != LossAggMode::TokenMean,
                    dro_beta: Some(0.3),
                    ..LossConfig::default()
                }));
            }
        }
        for seed in [5u64, 6] {
            let d = data(seed);
            for cfg in &configs {
                check(cfg, &d, false);
                for level in RolloutLevel::ALL {
                    for mode in RolloutMode::ALL {
                        let cfg = LossConfig {
                            rollout_correction: Some(RolloutCorrection {
                                threshold: 1.5,
                                ..RolloutCorrection::new(level, mode)
                            }),
                            ..*cfg
                        };
                        check_with(&cfg, &d, false, Some(&rollout));
                    }
                }
            }
        }
    }

    #[test]
    fn empty_batch_is_zero_not_nan() {
        let d = data(3);
        let mask = vec![0.0; ROWS];
        for agg in LossAggMode::ALL {
            let cfg = LossConfig {
                loss_agg_mode: agg,
                ..LossConfig::default()
            };
            let mut b = batch(&d, &d.logits, Some(&d.old));
            b.mask = &mask;
            let out = policy_loss(&cfg, &b).unwrap();
            assert_eq!(out.loss, 0.0);
            assert!(out.grad.iter().all(|&g| g == 0.0));
            assert_eq!(out.metrics, Default::default());
        }
    }

    #[test]
    fn seed_reinforce_is_minus_mean_logp_times_reward() {
        // the seed: loss = -mean_t(logp_t) · R over one response
        let d = data(4);
        let mask = vec![1.0; 4];
        let b = Batch {
            logits: &d.logits[..4 * V],
            vocab: V,
            rows_per_seq: 4,
            targets: &d.targets[..4],
            mask: &mask,
            advantages: &[1.0],
            old_logp: None,
            ref_logp: None,
        };
        let cfg = LossConfig {
            mode: PolicyLossMode::Reinforce,
            loss_agg_mode: LossAggMode::SeqMeanTokenMean,
            ..LossConfig::default()
        };
        let out = policy_loss(&cfg, &b).unwrap();
        let mean: f64 = out.logp.iter().sum::<f64>() / 4.0;
        assert!((out.loss + mean).abs() < 1e-12);
    }
}
