//! The new fields at their defaults, and the error table of
//! docs/MATH.md#the-eval-command.

use super::*;

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
                defaults_change_nothing(&cfg, &d, &near, rc.is_none());
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

/// `cfg` with every new field spelled out at its default, and with the bias correction
/// at β = 0, gives `cfg`'s bits; with `unread` (no correction, no mask) a NaN sampler
/// log-prob reaches nothing.
fn defaults_change_nothing(cfg: &LossConfig, d: &Data, near: &[f64], unread: bool) {
    let cfg = *cfg;
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
    let want = run(&cfg, &d.b(), Some(near));
    same_bits(&run(&explicit, &d.b(), Some(near)), &want, "explicit");
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
        &run(&unbiased, &d.b(), Some(near)),
        &run(&zero_beta, &d.b(), Some(near)),
        "bias correction with β = 0",
    );
    assert_eq!(want.metrics.off_policy_mask_frac, 1.0);
    assert_eq!(want.metrics.vespo_phi_seq_mean, 0.0);
    assert!(want.off_policy_kept.iter().all(|&o| o == 1.0));
    if unread {
        // rollout log-probs nobody reads, even a NaN one
        let mut junk = near.to_vec();
        junk[9] = f64::NAN;
        same_bits(
            &run(&cfg, &d.b(), Some(&junk)),
            &run(&cfg, &d.b(), None),
            "unread",
        );
    }
}

fn err_arg(cfg: &LossConfig) -> Option<&'static str> {
    match cfg.validate() {
        Ok(()) => None,
        Err(Error::InvalidArgument { arg, .. }) => Some(arg),
        Err(e) => panic!("{cfg:?}: {e}"),
    }
}

/// `base()` changed by `f`.
fn with(f: &dyn Fn(&mut LossConfig)) -> LossConfig {
    let mut c = base();
    f(&mut c);
    c
}

fn truncate(level: RolloutLevel) -> Option<RolloutCorrection> {
    Some(RolloutCorrection::new(level, RolloutMode::Truncate))
}

/// Bad values, each with the field its error names.
fn bad_values() -> Vec<(LossConfig, &'static str)> {
    vec![
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
        (with(&|c| c.vespo_k_pos = f32::NAN), "vespo_k_pos"),
    ]
}

/// Bad combinations of mode and option, each with the field its error names.
fn bad_combinations() -> Vec<(LossConfig, &'static str)> {
    vec![
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
            with(&|c| {
                (c.mode, c.rollout_correction) = (M::Vespo, truncate(RolloutLevel::Sequence))
            }),
            "rollout_is",
        ),
        (
            with(&|c| {
                (c.mode, c.rollout_correction) = (M::Vespo, truncate(RolloutLevel::Geometric))
            }),
            "rollout_is",
        ),
    ]
}

/// Combinations docs/MATH.md allows.
fn good_configs() -> Vec<LossConfig> {
    vec![
        with(&|c| (c.mode, c.dro_beta) = (M::Dro, Some(0.1))),
        with(&|c| c.delta = Some(1.01)),
        with(&|c| (c.mode, c.delta) = (M::Gspo, Some(2.0))),
        with(&|c| c.importance_sampling_level = SEQ_LEVEL),
        with(&|c| (c.mode, c.importance_sampling_level) = (M::Cispo, SEQ_LEVEL)),
        with(&|c| (c.mode, c.importance_sampling_level) = (M::Sapo, SEQ_LEVEL)),
        with(&|c| c.off_policy_mask_threshold = Some(0.0)),
        with(&|c| (c.mode, c.rollout_correction) = (M::Vespo, truncate(RolloutLevel::Token))),
        with(&|c| (c.mode, c.rollout_correction) = (M::GeoMean, truncate(RolloutLevel::Sequence))),
        with(&|c| (c.mode, c.clip_ratio_c) = (M::DppoTv, Some(1.5))),
        with(&|c| c.loss_agg_mode = LossAggMode::TokenSum),
    ]
}

#[test]
fn validate_names_the_field() {
    let bad: Vec<(LossConfig, &str)> = bad_values().into_iter().chain(bad_combinations()).collect();
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
    for cfg in &good_configs() {
        assert_eq!(err_arg(cfg), None, "{cfg:?}");
        // and the reference computes them without a panic
        let near = rollout_near(&d);
        assert!(run(cfg, &d.b(), Some(&near)).loss.is_finite(), "{cfg:?}");
    }
}
