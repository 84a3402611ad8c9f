//! The modes and options of 2026 (docs/MATH.md, "Policy modes of 2026" to "The
//! off-policy sequence mask") on every adapter against the f64 reference: each option
//! over the modes that take it (with per-sequence and per-token advantages, with and
//! without the sampler's log-probs, in every dtype), the same bits across parts and
//! chunks, and the edge cases docs/MATH.md names. The modes × aggregations × estimators
//! × dtypes are tests/policy_loss.rs's (PolicyLossMode::ALL holds the new modes).

mod common;

use common::*;
use wgpu_policy_loss::{
    Context, DType, HostLogits, HostLoss, HostPart, LossConfig, PolicyLossMode,
};

fn part<'a>(case: &'a LossCase, l: &'a Logits, using: Use, rollout: bool) -> HostPart<'a> {
    HostPart {
        batch: case.batch(l.host(), using),
        rollout_logprobs: rollout.then_some(&case.rollout[..]),
    }
}

/// check_loss_with in f32 logits and gradient.
fn check_f32(ctx: &Context, cfg: &LossConfig, case: &LossCase, using: Use, rollout: bool) {
    check_loss_with(ctx, cfg, case, DType::F32, Some(DType::F32), using, rollout);
}

fn run(ctx: &wgpu_policy_loss::Context, cfg: &LossConfig, p: HostPart<'_>) -> HostLoss {
    ctx.policy_loss_parts(cfg, &[p], Some(DType::F32))
        .unwrap_or_else(|e| panic!("{}: {cfg:?}: {e}", name(ctx)))
}

/// Every option over its modes: both kinds of advantages, with and without the
/// sampler's log-probs (the off-policy mask's σ), the dtypes cycled.
#[test]
fn every_option_against_the_reference() {
    // sequence 1 is masked out entirely: GMPO's empty sequence, the seq-mean weights
    let case = LossCase::new(41, 4, 6, 37);
    let options = options_2026();
    for ctx in contexts() {
        for (i, (_, cfg)) in options.iter().enumerate() {
            for k in 0..4 {
                let using = Use {
                    per_token_adv: k % 2 == 1,
                    ..ALL_INPUTS
                };
                // the rollout correction needs the sampler's log-probs
                let rollout = k >= 2 || cfg.rollout_correction.is_some();
                let dtype = DType::ALL[(i + k) % 3];
                let grad = DType::ALL[(i + 2 * k) % 3];
                check_loss_with(ctx, cfg, &case, dtype, Some(grad), using, rollout);
            }
        }
    }
}

/// Without old log-probs every ratio is 1 but its gradient is not 0: the sequence
/// level's addend, the bias-corrected KL's `kl` term, GMPO's Ā_b.
#[test]
fn on_policy_options_against_the_reference() {
    let case = LossCase::new(43, 3, 5, 29);
    for ctx in contexts() {
        for (_, cfg) in options_2026() {
            let using = Use {
                old: false,
                ..ALL_INPUTS
            };
            check_f32(ctx, &cfg, &case, using, true);
        }
    }
}

/// The ±20 clamp of the log ratio: rows whose old log-prob lies 30 below (or above)
/// the current one, so token ratios and whole sequences' mean log ratios pass it.
#[test]
fn the_clamp_of_the_ratio() {
    let mut case = LossCase::new(47, 4, 3, 23);
    for r in 0..case.rows() {
        let seq = r / 3;
        let shift = match seq {
            0 => -30.0,
            2 if r % 2 == 0 => 30.0,
            _ => 0.0,
        };
        case.old[r] += shift;
    }
    for ctx in contexts() {
        for (_, cfg) in options_2026() {
            check_f32(ctx, &cfg, &case, ALL_INPUTS, true);
        }
    }
}

/// DPPO with A = 0 takes the `else` branch (docs/MATH.md#policy-modes-of-2026): its
/// tokens count in pg_clipfrac as the reference counts them, and weigh nothing.
#[test]
fn dppo_with_zero_advantages() {
    let mut case = LossCase::new(53, 3, 6, 31);
    for (r, a) in case.adv_tok.iter_mut().enumerate() {
        if r % 3 == 0 {
            *a = 0.0;
        }
    }
    case.adv_seq[0] = 0.0;
    for ctx in contexts() {
        for mode in [PolicyLossMode::DppoTv, PolicyLossMode::DppoKl] {
            for per_token_adv in [false, true] {
                let cfg = LossConfig {
                    clip_ratio_low: 0.15,
                    clip_ratio_high: 0.05,
                    ..base_2026(mode)
                };
                let using = Use {
                    per_token_adv,
                    ..ALL_INPUTS
                };
                check_f32(ctx, &cfg, &case, using, false);
            }
        }
    }
}

/// A φ that overflows (k·L beyond f32) is 0, never NaN: the loss stays finite.
#[test]
fn vespo_nonfinite_weights_are_zero() {
    let case = LossCase::new(59, 3, 5, 19);
    for ctx in contexts() {
        for (k, lambda) in [(1e30, 3.0), (2.0, 1e38), (-1e30, 2.0)] {
            let cfg = LossConfig {
                vespo_k_pos: k,
                vespo_k_neg: k,
                vespo_lambda_pos: lambda,
                ..base_2026(PolicyLossMode::Vespo)
            };
            check_f32(ctx, &cfg, &case, ALL_INPUTS, false);
            let l = Logits::from_f32(DType::F32, &case.logits);
            let got = run(ctx, &cfg, part(&case, &l, ALL_INPUTS, false));
            assert!(got.metrics.loss.is_finite(), "{cfg:?}: {:?}", got.metrics);
            assert!(got.metrics.vespo_phi_seq_mean.is_finite());
        }
    }
}

/// The off-policy mask keeping every sequence has the bits of no mask (its o is 1);
/// keeping none (every advantage negative, σ far above logp) has the loss and
/// gradient bits of zero advantages.
#[test]
fn off_policy_mask_keeping_all_and_none() {
    let mut case = LossCase::new(61, 4, 5, 29);
    let l = Logits::from_f32(DType::F32, &case.logits);
    for ctx in contexts() {
        for mode in [
            PolicyLossMode::PpoClip,
            PolicyLossMode::Vespo,
            PolicyLossMode::Gspo,
        ] {
            let plain = base_2026(mode);
            let all = LossConfig {
                off_policy_mask_threshold: Some(1e30),
                ..plain
            };
            let a = run(ctx, &plain, part(&case, &l, ALL_INPUTS, true));
            let b = run(ctx, &all, part(&case, &l, ALL_INPUTS, true));
            assert!(same_bits(&a, &b), "{mode:?}: keep all");
            assert_eq!(b.metrics.off_policy_mask_frac, 1.0);
        }
    }
    for a in case.adv_seq.iter_mut() {
        *a = -a.abs() - 0.1;
    }
    let high: Vec<f32> = case.old.iter().map(|o| o + 5.0).collect();
    for ctx in contexts() {
        for mode in [
            PolicyLossMode::PpoClip,
            PolicyLossMode::Vespo,
            PolicyLossMode::DppoKl,
        ] {
            let none = LossConfig {
                off_policy_mask_threshold: Some(0.0),
                ..base_2026(mode)
            };
            let masked = ctx
                .policy_loss_parts(
                    &none,
                    &[HostPart {
                        batch: case.batch(l.host(), ALL_INPUTS),
                        rollout_logprobs: Some(&high),
                    }],
                    Some(DType::F32),
                )
                .unwrap();
            let zeros = vec![0.0f32; case.adv_seq.len()];
            let mut batch = case.batch(l.host(), ALL_INPUTS);
            batch.advantages = &zeros;
            let z = run(
                ctx,
                &base_2026(mode),
                HostPart {
                    batch,
                    rollout_logprobs: None,
                },
            );
            assert_eq!(masked.metrics.off_policy_mask_frac, 0.0, "{mode:?}");
            assert_eq!(
                masked.metrics.loss.to_bits(),
                z.metrics.loss.to_bits(),
                "{mode:?}"
            );
            assert_eq!(masked.grad, z.grad, "{mode:?}: keep none");
        }
    }
}

/// TRL's δ ≥ 1 + ε_high is dual-clip with c = δ (docs/MATH.md#ratio-options), ratio by
/// token or sequence.
#[test]
fn delta_above_the_band_is_dual_clip() {
    let case = LossCase::new(67, 4, 5, 29);
    let l = Logits::from_f32(DType::F32, &case.logits);
    for ctx in contexts() {
        for mode in [PolicyLossMode::PpoClip, PolicyLossMode::Gspo] {
            for delta in [1.28, 1.5, 3.0] {
                let with_delta = LossConfig {
                    delta: Some(delta),
                    ..base_2026(mode)
                };
                let dual = LossConfig {
                    clip_ratio_c: Some(delta),
                    ..base_2026(mode)
                };
                let a = run(ctx, &with_delta, part(&case, &l, ALL_INPUTS, false));
                let b = run(ctx, &dual, part(&case, &l, ALL_INPUTS, false));
                let what = format!("{} {mode:?} δ = {delta}", name(ctx));
                let tol = |w: f32| 1e-6 + 1e-6 * w.abs() as f64;
                for (g, w) in [
                    (a.metrics.loss, b.metrics.loss),
                    (a.metrics.pg_clipfrac, b.metrics.pg_clipfrac),
                    (a.metrics.pg_clipfrac_lower, b.metrics.pg_clipfrac_lower),
                ] {
                    close(g, w as f64, tol(w)).unwrap_or_else(|e| panic!("{what}: {e}"));
                }
                let (ga, gb) = (a.grad.unwrap().to_f32(), b.grad.unwrap().to_f32());
                for (x, y) in ga.iter().zip(&gb) {
                    assert!((x - y).abs() <= 1e-7 + 1e-6 * y.abs(), "{what}: {x} vs {y}");
                }
            }
        }
    }
}

/// Every option keeps its bits when the rows come in parts (sequences whole), and
/// run to run.
#[test]
fn options_have_the_bits_of_one_buffer_across_parts() {
    let case = LossCase::new(71, 6, 4, 33);
    let l = Logits::from_f32(DType::Bf16, &case.logits);
    for ctx in contexts() {
        for (i, (label, cfg)) in options_2026().iter().enumerate() {
            let using = Use {
                per_token_adv: i % 2 == 1,
                ..ALL_INPUTS
            };
            let rows = |(a, b): (usize, usize)| a * 4..b * 4;
            let whole = run(ctx, cfg, part(&case, &l, using, true));
            let again = run(ctx, cfg, part(&case, &l, using, true));
            assert!(same_bits(&whole, &again), "{label}: run to run");
            let cuts: &[(usize, usize)] = [&[(0, 1), (1, 6)][..], &[(0, 2), (2, 2), (2, 6)]][i % 2];
            let parts: Vec<HostPart<'_>> = cuts
                .iter()
                .map(|&c| sub_part(&case, &l, rows(c), using))
                .collect();
            let split = ctx
                .policy_loss_parts(cfg, &parts, Some(DType::F32))
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert!(
                same_bits(&whole, &split),
                "{} {label} cuts {cuts:?}:\n{:?}\nvs\n{:?}",
                name(ctx),
                whole.metrics,
                split.metrics
            );
        }
    }
}

/// Rows `rows` of `case` (whole sequences) as one part.
fn sub_part<'a>(
    case: &'a LossCase,
    l: &'a Logits,
    rows: std::ops::Range<usize>,
    using: Use,
) -> HostPart<'a> {
    let v = case.vocab as usize;
    let rps = case.rows_per_seq as usize;
    let mut batch = case.batch(l.host(), using);
    let x = rows.start * v..rows.end * v;
    batch.logits = match l.dtype {
        DType::F32 => HostLogits::F32(&l.f32[x]),
        DType::F16 => HostLogits::F16(&l.f16[x]),
        DType::Bf16 => HostLogits::Bf16(&l.bf16[x]),
    };
    batch.targets = &case.targets[rows.clone()];
    batch.mask = &case.mask[rows.clone()];
    batch.advantages = match using.per_token_adv {
        true => &case.adv_tok[rows.clone()],
        false => &case.adv_seq[rows.start / rps..rows.end / rps],
    };
    batch.old_logprobs = using.old.then(|| &case.old[rows.clone()]);
    batch.ref_logprobs = using.refp.then(|| &case.refp[rows.clone()]);
    HostPart {
        batch,
        rollout_logprobs: Some(&case.rollout[rows]),
    }
}
