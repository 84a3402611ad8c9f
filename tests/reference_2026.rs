//! The f64 reference on SPEC "The 2026 loss matrix" (with /tmp/sem2026.md's pinned
//! choices): where SPEC's gradient is the loss's derivative, against central
//! differences of the reference loss (as tests/reference.rs does); where a weight is
//! detached (DPPO, VESPO, CISPO's sequence weight, straight-through KL, the off-policy
//! mask), through the equivalences SPEC states; and SPEC's error table through
//! `LossConfig::validate`. CPU only.
// rows and vocabulary entries by index read as SPEC's formulas do
#![allow(clippy::needless_range_loop)]

use wgpu_policy_loss::reference::{clipped_term, policy_loss, policy_loss_with, row_stats};
use wgpu_policy_loss::reference::{Batch, LossOutput};
use wgpu_policy_loss::{
    Error, ImportanceSamplingLevel, KlEstimator, LossAggMode, LossConfig, PolicyLossMode,
    RolloutCorrection, RolloutLevel, RolloutMode, RowInput, TrlLossType,
};

use ImportanceSamplingLevel::Sequence as SEQ_LEVEL;
use PolicyLossMode as M;

const V: usize = 6;
const ROWS: usize = 12;

/// 3 sequences of 4 rows, V = 6: row 3 masked out, sequence 1 empty, row 10 weighs 0.5.
#[derive(Clone)]
struct Data {
    logits: Vec<f64>,
    targets: Vec<u32>,
    mask: Vec<f64>,
    adv: Vec<f64>,
    old: Vec<f64>,
    refp: Vec<f64>,
    rows_per_seq: usize,
}

/// A tiny LCG in [−1, 1): the reference tests stay free of RNG crates.
fn lcg(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

fn data(seed: u64) -> Data {
    let mut next = lcg(seed);
    let logits: Vec<f64> = (0..ROWS * V).map(|_| 2.0 * next()).collect();
    let targets: Vec<u32> = (0..ROWS)
        .map(|r| ((r * 7 + seed as usize) % V) as u32)
        .collect();
    let mut d = Data {
        logits,
        targets,
        mask: vec![1., 1., 1., 0., 0., 0., 0., 0., 1., 1., 0.5, 1.],
        adv: vec![0.8, -1.3, -0.6],
        old: Vec::new(),
        refp: Vec::new(),
        rows_per_seq: 4,
    };
    let logp = d.logp(1.0);
    // row 1 of each sequence far off (ratio e^1.5: past ε and the dual-clip constant)
    d.old = (0..ROWS)
        .map(|r| match r % 4 {
            1 => logp[r] - 1.5,
            _ => logp[r] + 0.6 * next(),
        })
        .collect();
    d.refp = d.old.iter().map(|&o| o + 0.4 * next()).collect();
    d
}

/// Per-token advantages of both signs within a sequence, one of them 0.
const PER_TOKEN: [f64; ROWS] = [
    0.9, -0.4, 0.0, 0.3, 1.0, -1.0, 0.5, 0.2, -0.7, 0.6, -1.1, 0.25,
];
/// Per-token advantages, none 0 (where ties at A = 0 would differ).
const PER_TOKEN_NONZERO: [f64; ROWS] = [
    0.9, -0.4, 0.35, 0.3, 1.0, -1.0, 0.5, 0.2, -0.7, 0.6, -1.1, 0.25,
];

impl Data {
    fn batch<'a>(&'a self, logits: &'a [f64], old: Option<&'a [f64]>) -> Batch<'a> {
        Batch {
            logits,
            vocab: V,
            rows_per_seq: self.rows_per_seq,
            targets: &self.targets,
            mask: &self.mask,
            advantages: &self.adv,
            old_logp: old,
            ref_logp: Some(&self.refp),
        }
    }

    /// The batch as given (old log-probs included).
    fn b(&self) -> Batch<'_> {
        self.batch(&self.logits, Some(&self.old))
    }

    fn with_adv(&self, adv: &[f64]) -> Data {
        Data {
            adv: adv.to_vec(),
            ..self.clone()
        }
    }

    fn rows(&self) -> usize {
        self.targets.len()
    }

    fn logp(&self, tau: f64) -> Vec<f64> {
        (0..self.rows())
            .map(|r| {
                let x = &self.logits[r * V..(r + 1) * V];
                row_stats(x, self.targets[r] as usize, tau).logp
            })
            .collect()
    }

    fn adv_of(&self, r: usize) -> f64 {
        match self.adv.len() == self.rows() {
            true => self.adv[r],
            false => self.adv[r / self.rows_per_seq],
        }
    }
}

/// The sampler's log-probs near old's (the rollout correction's usual case).
fn rollout_near(d: &Data) -> Vec<f64> {
    d.old
        .iter()
        .zip(&d.refp)
        .map(|(o, r)| o + 0.7 * (r - o))
        .collect()
}

/// The sampler's log-probs `shift` above the current ones (the off-policy mask's σ).
fn rollout_shifted(d: &Data, shift: f64) -> Vec<f64> {
    d.logp(1.0).iter().map(|l| l + shift).collect()
}

fn base() -> LossConfig {
    LossConfig {
        clip_ratio_high: 0.28,
        ..LossConfig::default()
    }
}

fn run(cfg: &LossConfig, b: &Batch<'_>, rollout: Option<&[f64]>) -> LossOutput {
    policy_loss_with(cfg, b, rollout).unwrap_or_else(|e| panic!("{cfg:?}: {e}"))
}

/// Central differences of the reference loss against its gradient, old log-probs held
/// fixed (on-policy: at the current log-probs, after checking that no old log-probs
/// give the same value and gradient).
fn fd(cfg: &LossConfig, d: &Data, on_policy: bool, rollout: Option<&[f64]>) {
    let base_old = match on_policy {
        true => d.logp(cfg.temperature as f64),
        false => d.old.clone(),
    };
    let analytic = run(cfg, &d.batch(&d.logits, Some(&base_old)), rollout);
    assert!(analytic.loss.is_finite(), "{cfg:?}: loss {}", analytic.loss);
    if on_policy {
        let plain = run(cfg, &d.batch(&d.logits, None), rollout);
        close(&plain, &analytic, 1e-12, &format!("{cfg:?} on-policy"));
    }
    let h = 1e-6;
    let mut x = d.logits.clone();
    for i in 0..x.len() {
        let x0 = x[i];
        x[i] = x0 + h;
        let up = run(cfg, &d.batch(&x, Some(&base_old)), rollout).loss;
        x[i] = x0 - h;
        let down = run(cfg, &d.batch(&x, Some(&base_old)), rollout).loss;
        x[i] = x0;
        let fd = (up - down) / (2.0 * h);
        let an = analytic.grad[i];
        assert!(
            (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
            "{cfg:?} on_policy={on_policy}: ∂loss/∂x[{i}] fd {fd} analytic {an}"
        );
    }
}

/// Loss and gradient within `tol` (relative to 1 + |value|).
fn close(got: &LossOutput, want: &LossOutput, tol: f64, what: &str) {
    let near = |a: f64, b: f64| (a - b).abs() <= tol * (1.0 + b.abs());
    assert!(
        near(got.loss, want.loss),
        "{what}: loss {} vs {}",
        got.loss,
        want.loss
    );
    for (i, (a, b)) in got.grad.iter().zip(&want.grad).enumerate() {
        assert!(near(*a, *b), "{what}: grad[{i}] {a} vs {b}");
    }
}

/// The same bits: loss, gradient, metrics, per-row outputs.
fn same_bits(got: &LossOutput, want: &LossOutput, what: &str) {
    assert_eq!(got.loss.to_bits(), want.loss.to_bits(), "{what}: loss");
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got.grad), bits(&want.grad), "{what}: grad");
    assert_eq!(got.metrics, want.metrics, "{what}: metrics");
    assert_eq!(bits(&got.logp), bits(&want.logp), "{what}: logp");
    assert_eq!(got.kept, want.kept, "{what}: kept");
    assert_eq!(got.selected, want.selected, "{what}: selected");
    assert_eq!(bits(&got.rollout_weight), bits(&want.rollout_weight));
    assert_eq!(bits(&got.off_policy_kept), bits(&want.off_policy_kept));
}

fn rollout_cfg(level: RolloutLevel, mode: RolloutMode) -> Option<RolloutCorrection> {
    Some(RolloutCorrection {
        threshold: 1.5,
        ..RolloutCorrection::new(level, mode)
    })
}

/// The rollout corrections the gradient checks run under (None: off).
fn rollouts() -> [Option<RolloutCorrection>; 4] {
    use RolloutLevel as L;
    [
        None,
        rollout_cfg(L::Token, RolloutMode::Truncate),
        rollout_cfg(L::Sequence, RolloutMode::Mask),
        rollout_cfg(L::Geometric, RolloutMode::Truncate),
    ]
}

// ---------------------------------------------------------------------------------
// gradients that are the loss's derivative

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

// ---------------------------------------------------------------------------------
// detached weights: SPEC's equivalences

/// `cfg` in mode `reinforce` on `d` with per-row advantages `adv`.
fn reinforce_with(cfg: &LossConfig, d: &Data, adv: &[f64], rollout: Option<&[f64]>) -> LossOutput {
    let cfg = LossConfig {
        mode: M::Reinforce,
        importance_sampling_level: ImportanceSamplingLevel::Token,
        delta: None,
        ..*cfg
    };
    run(&cfg, &d.with_adv(adv).b(), rollout)
}

/// DPPO's `v` and `c` of row `r`, computed here from SPEC's formulas.
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

/// VESPO's `L_b` and `φ` of every row, computed here from SPEC's formulas (`q` the
/// token-level rollout weights, or None).
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

/// The token-level rollout weights, from SPEC's formulas.
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
fn delta_decides_by_sems_rules() {
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
        // A = 0 ties: the first term, capped (sem's tie rule)
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

/// `s_b` of every sequence, from SPEC's formula.
fn seq_ratios(d: &Data, logp: &[f64]) -> Vec<f64> {
    (0..ROWS.div_ceil(d.rows_per_seq))
        .map(|s| {
            let rows = (s * d.rows_per_seq..(s + 1) * d.rows_per_seq).filter(|&r| d.mask[r] > 0.0);
            let (num, den) = rows.fold((0.0, 0.0), |(n, m), r| {
                (n + d.mask[r] * (logp[r] - d.old[r]), m + d.mask[r])
            });
            let mean: f64 = if den > 0.0 { num / den } else { 0.0 };
            mean.clamp(-20.0, 20.0).exp()
        })
        .collect()
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

/// Every new field at its default, spelled out, gives the same bits; so do the switches
/// that need something else to act (the bias correction with β = 0, rollout log-probs
/// without the correction or the mask).
#[test]
fn the_new_fields_at_their_defaults_change_nothing() {
    let d = data(17);
    let near = rollout_near(&d);
    for mode in [
        M::Reinforce,
        M::PpoClip,
        M::Gspo,
        M::Cispo,
        M::Sapo,
        M::ClipCov,
        M::KlCov,
    ] {
        for agg in LossAggMode::ALL {
            for (c, rc) in [
                (None, None),
                (
                    Some(3.0),
                    rollout_cfg(RolloutLevel::Geometric, RolloutMode::Mask),
                ),
            ] {
                let cfg = LossConfig {
                    mode,
                    loss_agg_mode: agg,
                    clip_ratio_c: c,
                    rollout_correction: rc,
                    kl_coef: 0.1,
                    entropy_coeff: 0.02,
                    kl_cov_ratio: 0.3,
                    clip_cov_ratio: 0.5,
                    clip_cov_lb: -5.0,
                    ..base()
                };
                let explicit = LossConfig {
                    dro_beta: None,
                    vespo_k_pos: 2.0,
                    vespo_lambda_pos: 3.0,
                    vespo_k_neg: 3.0,
                    vespo_lambda_neg: 2.0,
                    delta: None,
                    importance_sampling_level: ImportanceSamplingLevel::Token,
                    off_policy_mask_threshold: None,
                    use_bias_correction_kl: false,
                    ..cfg
                };
                let want = run(&cfg, &d.b(), Some(&near));
                same_bits(&run(&explicit, &d.b(), Some(&near)), &want, "explicit");
                let unbiased = LossConfig {
                    use_bias_correction_kl: true,
                    kl_coef: 0.0,
                    ..cfg
                };
                let zero_beta = LossConfig {
                    kl_coef: 0.0,
                    ..cfg
                };
                same_bits(
                    &run(&unbiased, &d.b(), Some(&near)),
                    &run(&zero_beta, &d.b(), Some(&near)),
                    "bias correction with β = 0",
                );
                assert_eq!(want.metrics.off_policy_mask_frac, 1.0);
                assert_eq!(want.metrics.vespo_phi_seq_mean, 0.0);
                assert!(want.off_policy_kept.iter().all(|&o| o == 1.0));
                if rc.is_none() {
                    // rollout log-probs nobody reads, even a NaN one
                    let mut junk = near.clone();
                    junk[9] = f64::NAN;
                    same_bits(
                        &run(&cfg, &d.b(), Some(&junk)),
                        &run(&cfg, &d.b(), None),
                        "unread",
                    );
                }
            }
        }
    }
    let empty = Data {
        mask: vec![0.0; ROWS],
        ..data(18)
    };
    let m = run(&base(), &empty.b(), None).metrics;
    assert_eq!((m.off_policy_mask_frac, m.vespo_phi_seq_mean), (0.0, 0.0));
}

// ---------------------------------------------------------------------------------
// SPEC's error table

fn err_arg(cfg: &LossConfig) -> Option<&'static str> {
    match cfg.validate() {
        Ok(()) => None,
        Err(Error::InvalidArgument { arg, .. }) => Some(arg),
        Err(e) => panic!("{cfg:?}: {e}"),
    }
}

#[test]
fn validate_names_the_field() {
    let with = |f: &dyn Fn(&mut LossConfig)| {
        let mut c = base();
        f(&mut c);
        c
    };
    let rollout = |level| Some(RolloutCorrection::new(level, RolloutMode::Truncate));
    let bad: Vec<(LossConfig, &str)> = vec![
        (with(&|c| c.mode = M::Dro), "dro_beta"),
        (
            with(&|c| (c.mode, c.dro_beta) = (M::Dro, Some(0.0))),
            "dro_beta",
        ),
        (
            with(&|c| (c.mode, c.dro_beta) = (M::Dro, Some(-1.0))),
            "dro_beta",
        ),
        (
            with(&|c| (c.mode, c.dro_beta) = (M::Dro, Some(f32::NAN))),
            "dro_beta",
        ),
        (with(&|c| c.delta = Some(1.0)), "delta"),
        (with(&|c| c.delta = Some(0.5)), "delta"),
        (with(&|c| c.delta = Some(f32::INFINITY)), "delta"),
        (
            with(&|c| (c.mode, c.delta) = (M::Cispo, Some(1.5))),
            "delta",
        ),
        (
            with(&|c| (c.mode, c.delta) = (M::GeoMean, Some(1.5))),
            "delta",
        ),
        (
            with(&|c| (c.clip_ratio_c, c.delta) = (Some(3.0), Some(1.5))),
            "delta",
        ),
        (
            with(&|c| (c.mode, c.importance_sampling_level) = (M::Reinforce, SEQ_LEVEL)),
            "importance_sampling_level",
        ),
        (
            with(&|c| (c.mode, c.importance_sampling_level) = (M::Gspo, SEQ_LEVEL)),
            "importance_sampling_level",
        ),
        (
            with(&|c| (c.mode, c.importance_sampling_level) = (M::GeoMean, SEQ_LEVEL)),
            "importance_sampling_level",
        ),
        (
            with(&|c| (c.mode, c.importance_sampling_level) = (M::Vespo, SEQ_LEVEL)),
            "importance_sampling_level",
        ),
        (
            with(&|c| (c.mode, c.importance_sampling_level) = (M::ClipCov, SEQ_LEVEL)),
            "importance_sampling_level",
        ),
        (
            with(&|c| (c.mode, c.top_entropy_quantile) = (M::GeoMean, Some(0.5))),
            "top_entropy_quantile",
        ),
        (
            with(&|c| (c.mode, c.off_policy_mask_threshold) = (M::GeoMean, Some(0.5))),
            "off_policy_mask_threshold",
        ),
        (
            with(&|c| c.off_policy_mask_threshold = Some(-0.1)),
            "off_policy_mask_threshold",
        ),
        (
            with(&|c| c.off_policy_mask_threshold = Some(f32::NAN)),
            "off_policy_mask_threshold",
        ),
        (
            with(&|c| c.off_policy_mask_threshold = Some(f32::INFINITY)),
            "off_policy_mask_threshold",
        ),
        (
            with(&|c| (c.mode, c.rollout_correction) = (M::Vespo, rollout(RolloutLevel::Sequence))),
            "rollout_is",
        ),
        (
            with(&|c| {
                (c.mode, c.rollout_correction) = (M::Vespo, rollout(RolloutLevel::Geometric))
            }),
            "rollout_is",
        ),
        (with(&|c| c.vespo_k_pos = f32::NAN), "vespo_k_pos"),
    ];
    for (cfg, arg) in &bad {
        assert_eq!(err_arg(cfg), Some(*arg), "{cfg:?}");
    }
    // the reference refuses them the same way
    let d = data(19);
    let e = policy_loss(&bad[0].0, &d.b()).err();
    assert!(
        matches!(
            e,
            Some(Error::InvalidArgument {
                arg: "dro_beta",
                ..
            })
        ),
        "{e:?}"
    );
    let good: Vec<LossConfig> = vec![
        with(&|c| (c.mode, c.dro_beta) = (M::Dro, Some(0.1))),
        with(&|c| c.delta = Some(1.01)),
        with(&|c| (c.mode, c.delta) = (M::Gspo, Some(2.0))),
        with(&|c| c.importance_sampling_level = SEQ_LEVEL),
        with(&|c| (c.mode, c.importance_sampling_level) = (M::Cispo, SEQ_LEVEL)),
        with(&|c| (c.mode, c.importance_sampling_level) = (M::Sapo, SEQ_LEVEL)),
        with(&|c| c.off_policy_mask_threshold = Some(0.0)),
        with(&|c| (c.mode, c.rollout_correction) = (M::Vespo, rollout(RolloutLevel::Token))),
        with(&|c| (c.mode, c.rollout_correction) = (M::GeoMean, rollout(RolloutLevel::Sequence))),
        with(&|c| (c.mode, c.clip_ratio_c) = (M::DppoTv, Some(1.5))),
        with(&|c| c.loss_agg_mode = LossAggMode::TokenSum),
    ];
    for cfg in &good {
        assert_eq!(err_arg(cfg), None, "{cfg:?}");
        // and the reference computes them without a panic
        let near = rollout_near(&d);
        assert!(run(cfg, &d.b(), Some(&near)).loss.is_finite(), "{cfg:?}");
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
