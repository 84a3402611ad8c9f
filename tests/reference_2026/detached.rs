//! Detached weights (DPPO, VESPO, straight-through KL): the equivalences of
//! docs/MATH.md, "Policy modes of 2026" and "The KL term".

use super::*;

/// DPPO's `v` and `c` of row `r`, computed here from the formulas of
/// docs/MATH.md#policy-modes-of-2026.
fn dppo_cv(cfg: &LossConfig, d: &Data, logp: f64, r: usize) -> (bool, f64) {
    let (a, old) = (d.adv_of(r), d.old[r]);
    let (p, p_old) = (logp.exp(), old.exp());
    let (dl, dh) = (cfg.clip_ratio_low as f64, cfg.clip_ratio_high as f64);
    let v = match (cfg.mode, a > 0.0) {
        (M::DppoTv, true) => p - p_old <= dh,
        (M::DppoTv, false) => p - p_old >= -dl,
        (_, pos) => {
            let div = p_old * (old - logp)
                + (1.0 - p_old) * ((1.0 - p_old + 1e-8) / (1.0 - p + 1e-8)).ln();
            match pos {
                true => div <= dh || p <= p_old,
                false => div <= dl || p >= p_old,
            }
        }
    };
    let r_t = (logp - old).clamp(-20.0, 20.0).exp();
    (v, r_t)
}

#[test]
fn dppo_gradient_is_reinforce_with_c_v_a() {
    let mut cut_seen = (false, false);
    for seed in [1u64, 2, 3] {
        let d0 = data(seed);
        let rollout = rollout_near(&d0);
        for d in [d0.clone(), d0.with_adv(&PER_TOKEN)] {
            for mode in [M::DppoTv, M::DppoKl] {
                for (dl, dh, c) in [
                    (0.15, 0.15, None),
                    (0.05, 0.05, Some(1.2)),
                    (0.02, 0.1, None),
                ] {
                    for rc in [
                        None,
                        rollout_cfg(RolloutLevel::Token, RolloutMode::Truncate),
                    ] {
                        for agg in [LossAggMode::TokenMean, LossAggMode::SeqMeanTokenMean] {
                            let cfg = LossConfig {
                                mode,
                                clip_ratio_low: dl,
                                clip_ratio_high: dh,
                                clip_ratio_c: c,
                                rollout_correction: rc,
                                loss_agg_mode: agg,
                                kl_coef: 0.1,
                                entropy_coeff: 0.02,
                                ..base()
                            };
                            let got = run(&cfg, &d.b(), Some(&rollout));
                            let c_max = c.map_or(3.0, f64::from);
                            let (mut clip, mut low, mut n) = (0.0, 0.0, 0.0);
                            let adv: Vec<f64> = (0..ROWS)
                                .map(|r| {
                                    let (v, rt) = dppo_cv(&cfg, &d, got.logp[r], r);
                                    if d.mask[r] > 0.0 {
                                        n += d.mask[r];
                                        clip += d.mask[r] * (!v) as u8 as f64;
                                        low += d.mask[r] * (v && rt > c_max) as u8 as f64;
                                    }
                                    (v as u8 as f64) * rt.min(c_max) * d.adv_of(r)
                                })
                                .collect();
                            let want = reinforce_with(&cfg, &d, &adv, Some(&rollout));
                            let what = format!("{cfg:?}");
                            close(&got, &want, 1e-12, &what);
                            let m = got.metrics;
                            assert!((m.pg_clipfrac - clip / n).abs() < 1e-12, "{what}");
                            assert!((m.pg_clipfrac_lower - low / n).abs() < 1e-12, "{what}");
                            cut_seen.0 |= m.pg_clipfrac > 0.0 && m.pg_clipfrac < 1.0;
                            cut_seen.1 |= m.pg_clipfrac_lower > 0.0;
                        }
                    }
                }
                // without old log-probs: v = c = 1, REINFORCE
                let cfg = LossConfig { mode, ..base() };
                let no_old = d.batch(&d.logits, None);
                let want = run(
                    &LossConfig {
                        mode: M::Reinforce,
                        ..cfg
                    },
                    &no_old,
                    None,
                );
                same_bits(&run(&cfg, &no_old, None), &want, "dppo without old");
            }
        }
    }
    assert!(
        cut_seen.0 && cut_seen.1,
        "the data never cut a token: {cut_seen:?}"
    );
}

/// One sequence of three confident rows (p ≈ 0.8) whose old probability was 0.5:
/// `p − p_old = 0.3` beyond δ_high = 0.2 (the `A > 0` branch cuts it) but not below
/// −δ_low (the `else` branch keeps it).
#[test]
fn dppo_zero_advantage_takes_the_else_branch() {
    let logits: Vec<f64> = (0..3)
        .flat_map(|_| [20f64.ln(), 0.0, 0.0, 0.0, 0.0, 0.0])
        .collect();
    let targets = [0u32; 3];
    let mask = [1.0; 3];
    let logp = row_stats(&logits[..V], 0, 1.0).logp;
    assert!((logp.exp() - 0.8).abs() < 1e-12);
    let old = [0.5f64.ln(); 3];
    for mode in [M::DppoTv, M::DppoKl] {
        let share = |a: f64| {
            let adv = [a];
            let b = Batch {
                logits: &logits,
                vocab: V,
                rows_per_seq: 3,
                targets: &targets,
                mask: &mask,
                advantages: &adv,
                old_logp: Some(&old),
                ref_logp: None,
            };
            let cfg = LossConfig { mode, ..base() };
            let cfg = LossConfig {
                clip_ratio_high: 0.2,
                ..cfg
            };
            run(&cfg, &b, None).metrics.pg_clipfrac
        };
        assert_eq!(share(1e-3), 1.0, "{mode:?}: A > 0 cuts it");
        assert_eq!(share(0.0), 0.0, "{mode:?}: A = 0 takes the else branch");
        assert_eq!(share(-1e-3), 0.0, "{mode:?}");
    }
}

/// VESPO's `L_b` and `φ` of every row, computed here from the formulas of
/// docs/MATH.md#policy-modes-of-2026 (`q` the token-level rollout weights, or None).
fn vespo_phis(cfg: &LossConfig, d: &Data, logp: &[f64], q: Option<&[f64]>) -> Vec<f64> {
    let lo = 1e-8f64.ln();
    let seqs = ROWS.div_ceil(d.rows_per_seq);
    let mut l = vec![0.0f64; seqs];
    for r in (0..ROWS).filter(|&r| d.mask[r] > 0.0) {
        let s = r / d.rows_per_seq;
        l[s] += d.mask[r] * (logp[r] - d.old[r]).clamp(-20.0, 20.0);
        if let Some(q) = q {
            l[s] += d.mask[r] * q[r].ln().clamp(lo, 20.0);
        }
    }
    (0..ROWS)
        .map(|r| {
            let lb = l[r / d.rows_per_seq].clamp(lo, 20.0);
            let a = d.adv_of(r);
            let (k, lam) = match a >= 0.0 {
                true => (cfg.vespo_k_pos, cfg.vespo_lambda_pos),
                false => (cfg.vespo_k_neg, cfg.vespo_lambda_neg),
            };
            let (k, lam) = (k as f64, (lam as f64).max(1e-4));
            let phi = (lam + k * lb - lam * lb.exp()).exp();
            if phi.is_finite() {
                phi
            } else {
                0.0
            }
        })
        .collect()
}

/// The token-level rollout weights, from the formulas of docs/MATH.md#rollout-correction.
fn token_q(d: &Data, rollout: &[f64], mode: RolloutMode) -> Vec<f64> {
    let rc = RolloutCorrection {
        threshold: 1.5,
        ..RolloutCorrection::new(RolloutLevel::Token, mode)
    };
    let (lo, hi) = (rc.lower() as f64, rc.threshold as f64);
    (0..ROWS)
        .map(|r| {
            let rho = (d.old[r] - rollout[r]).clamp(-20.0, 20.0).exp();
            match mode {
                RolloutMode::Truncate => rho.clamp(lo, hi),
                RolloutMode::Mask if rho < lo || rho > hi => 0.0,
                RolloutMode::Mask => rho,
            }
        })
        .collect()
}

#[test]
fn vespo_gradient_is_reinforce_with_phi_a() {
    let params = [
        (2.0, 3.0, 3.0, 2.0),
        (0.5, 0.0, -1.0, 5.0),
        (4.0, 0.5, 1.0, 1e-6),
    ];
    for seed in [1u64, 2] {
        let d0 = data(seed);
        let rollout = rollout_near(&d0);
        for d in [d0.clone(), d0.with_adv(&PER_TOKEN)] {
            for (kp, lp, kn, ln) in params {
                for rmode in [None, Some(RolloutMode::Truncate), Some(RolloutMode::Mask)] {
                    for (agg, renorm) in [
                        (LossAggMode::TokenMean, None),
                        (LossAggMode::SeqMeanTokenSum, None),
                        (LossAggMode::SeqMeanTokenMean, Some(false)),
                        (LossAggMode::TokenSum, Some(true)),
                    ] {
                        let cfg = LossConfig {
                            mode: M::Vespo,
                            vespo_k_pos: kp,
                            vespo_lambda_pos: lp,
                            vespo_k_neg: kn,
                            vespo_lambda_neg: ln,
                            rollout_correction: rmode
                                .and_then(|m| rollout_cfg(RolloutLevel::Token, m)),
                            loss_agg_mode: agg,
                            top_entropy_quantile: renorm.map(|_| 0.6),
                            top_entropy_renormalize: renorm == Some(true),
                            kl_coef: 0.1,
                            entropy_coeff: 0.02,
                            ..base()
                        };
                        check_vespo(&cfg, &d, &rollout, rmode);
                    }
                }
            }
        }
    }
}

/// VESPO against REINFORCE with `φ·A` (without the rollout correction: its weights
/// are inside φ), and its metric `vespo_phi_seq_mean`.
fn check_vespo(cfg: &LossConfig, d: &Data, rollout: &[f64], rmode: Option<RolloutMode>) {
    let got = run(cfg, &d.b(), Some(rollout));
    let q = rmode.map(|m| token_q(d, rollout, m));
    let phi = vespo_phis(cfg, d, &got.logp, q.as_deref());
    let adv: Vec<f64> = (0..ROWS).map(|r| phi[r] * d.adv_of(r)).collect();
    let plain = LossConfig {
        rollout_correction: None,
        ..*cfg
    };
    let want = reinforce_with(&plain, d, &adv, None);
    close(&got, &want, 1e-12, &format!("{cfg:?}"));
    let mean = match d.adv.len() == ROWS {
        true => {
            let n: f64 = (0..ROWS)
                .filter(|&r| d.mask[r] > 0.0)
                .map(|r| d.mask[r])
                .sum();
            (0..ROWS)
                .filter(|&r| d.mask[r] > 0.0)
                .map(|r| d.mask[r] * phi[r])
                .sum::<f64>()
                / n
        }
        // sequence 1 is empty: L = 0, φ = 1
        false => (phi[0] + 1.0 + phi[8]) / 3.0,
    };
    let m = got.metrics.vespo_phi_seq_mean;
    assert!((m - mean).abs() < 1e-12, "{cfg:?}: {m} vs {mean}");
}

#[test]
fn vespo_nonfinite_phi_is_zero_and_a_nan_log_weight_poisons() {
    let mut d = data(3);
    let logp = d.logp(1.0);
    for r in 0..4 {
        d.old[r] = logp[r] - 0.5; // L_0 = 1.5 > 0
    }
    let cfg = LossConfig {
        mode: M::Vespo,
        vespo_k_pos: 1e30,
        ..base()
    };
    let got = run(&cfg, &d.b(), None);
    let phi = vespo_phis(&cfg, &d, &got.logp, None);
    assert_eq!(phi[0], 0.0, "exp(1e30·1.5) is +inf, so φ = 0");
    let adv: Vec<f64> = (0..ROWS).map(|r| phi[r] * d.adv_of(r)).collect();
    close(&got, &reinforce_with(&cfg, &d, &adv, None), 1e-12, "inf φ");
    assert!(got.grad[..4 * V].iter().all(|&g| g == 0.0));
    let m = got.metrics.vespo_phi_seq_mean;
    assert!((m - (0.0 + 1.0 + phi[8]) / 3.0).abs() < 1e-12);
    // a NaN old log-prob: L_0 is NaN, read by every row of sequence 0
    d.old[1] = f64::NAN;
    let got = run(&base_vespo(), &d.b(), None);
    assert!(got.loss.is_nan());
    for r in [0usize, 1, 2] {
        assert!(
            got.grad[r * V..(r + 1) * V].iter().all(|g| g.is_nan()),
            "row {r}"
        );
    }
    assert!(got.grad[8 * V..].iter().all(|g| g.is_finite()));
    assert_eq!(
        got.metrics.first_invalid_input,
        Some((RowInput::OldLogprobs, 1))
    );
}

fn base_vespo() -> LossConfig {
    LossConfig {
        mode: M::Vespo,
        ..base()
    }
}

#[test]
fn straight_through_estimators_take_k2s_gradient() {
    for (plus, value) in [
        (KlEstimator::K1Plus, KlEstimator::K1),
        (KlEstimator::K3Plus, KlEstimator::K3),
        (KlEstimator::AbsPlus, KlEstimator::Abs),
    ] {
        assert_eq!(plus.value_estimator(), value);
        for mode in [M::Reinforce, M::PpoClip, M::GeoMean, M::Sapo, M::Vespo] {
            for agg in LossAggMode::ALL {
                let d = data(4);
                let cfg = |kl_loss_type| LossConfig {
                    mode,
                    kl_loss_type,
                    kl_coef: 0.3,
                    entropy_coeff: 0.02,
                    loss_agg_mode: agg,
                    ..base()
                };
                let got = run(&cfg(plus), &d.b(), None);
                let val = run(&cfg(value), &d.b(), None);
                let k2 = run(&cfg(KlEstimator::K2), &d.b(), None);
                let what = format!("{plus:?} {mode:?} {agg:?}");
                assert_eq!(got.loss.to_bits(), val.loss.to_bits(), "{what}");
                assert_eq!(got.metrics, val.metrics, "{what}");
                assert_eq!(got.grad, k2.grad, "{what}");
            }
        }
    }
    for (name, est) in [
        ("k1+", KlEstimator::K1Plus),
        ("kl+", KlEstimator::K1Plus),
        ("k2+", KlEstimator::K2),
        ("mse+", KlEstimator::K2),
        ("k3+", KlEstimator::K3Plus),
        ("low_var_kl+", KlEstimator::K3Plus),
        ("abs+", KlEstimator::AbsPlus),
        ("abs", KlEstimator::Abs),
    ] {
        assert_eq!(name.parse::<KlEstimator>().unwrap(), est, "{name}");
    }
}

/// With the bias correction at the token level, `k3+`'s `∂kl'` is `r·(logp − ref) +
/// r·k3`: k2's gradient plus `β·w·r·(k3 − k2)` on each row's G.
#[test]
fn straight_through_with_bias_correction() {
    let d = data(5);
    let cfg = |kl_loss_type| LossConfig {
        mode: M::Reinforce,
        kl_loss_type,
        kl_coef: 0.3,
        use_bias_correction_kl: true,
        ..base()
    };
    let got = run(&cfg(KlEstimator::K3Plus), &d.b(), None);
    let k3 = run(&cfg(KlEstimator::K3), &d.b(), None);
    let k2 = run(&cfg(KlEstimator::K2), &d.b(), None);
    assert_eq!(got.loss.to_bits(), k3.loss.to_bits());
    let n: f64 = d.mask.iter().sum();
    for r in (0..ROWS).filter(|&r| d.mask[r] > 0.0) {
        let x = &d.logits[r * V..(r + 1) * V];
        let p = wgpu_policy_loss::reference::softmax(x, 1.0);
        let lp = got.logp[r];
        let rt = (lp - d.old[r]).exp();
        let delta = d.refp[r] - lp;
        let (v3, v2) = (delta.exp() - delta - 1.0, 0.5 * delta * delta);
        let dg = 0.3f32 as f64 * d.mask[r] / n * rt * (v3 - v2);
        for v in 0..V {
            let onehot = (v == d.targets[r] as usize) as u8 as f64;
            let want = k2.grad[r * V + v] + dg * (onehot - p[v]);
            let have = got.grad[r * V + v];
            assert!(
                (have - want).abs() < 1e-12,
                "row {r} v {v}: {have} vs {want}"
            );
        }
    }
}
