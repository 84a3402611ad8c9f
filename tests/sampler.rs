//! The sampler's distribution in the kernels (docs/MATH.md#the-samplers-distribution):
//! per-token temperatures and the logit softcap, over every mode, aggregation and
//! dtype, on every adapter, against the f64 reference (`reference::policy_loss_sampled`);
//! through parts, rows longer than one binding and the fused head; bad temperatures
//! named on the host path and made NaN and counted on the device path; the same bits
//! whatever the batching; and, with every option off, the modules of before.

mod common;

use common::tally::Tally;
use common::*;
use wgpu_policy_loss::reference::compare;
use wgpu_policy_loss::{
    Context, DType, Error, HostLoss, HostPart, KlEstimator, LossAggMode, LossConfig,
    PolicyLossMode, RowInput,
};

/// Per-token temperatures for `case`: in [0.5, 1.6] on rows the loss reads, and junk
/// (0, −1, NaN, +inf) on the rows it does not (ignored there: docs/MATH.md#bad-input).
fn temperatures(case: &LossCase, seed: u64) -> Vec<f32> {
    use rand::RngExt;
    let mut r = rng(seed);
    let junk = [0.0, -1.0, f32::NAN, f32::INFINITY];
    (0..case.rows())
        .map(|i| match case.mask[i] > 0.0 {
            true => r.random_range(0.5f32..1.6),
            false => junk[i % junk.len()],
        })
        .collect()
}

/// One option set of the covering design: per-token temperatures, a softcap, or both.
#[derive(Clone, Copy, Debug)]
enum Opt {
    Temps,
    Softcap,
    Both,
}

const OPTS: [Opt; 3] = [Opt::Temps, Opt::Softcap, Opt::Both];

fn with_opt(cfg: &LossConfig, opt: Opt) -> LossConfig {
    LossConfig {
        logit_softcap: match opt {
            Opt::Temps => None,
            // logits of scale 2 against c = 3: tanh bends every one of them
            _ => Some(3.0),
        },
        ..*cfg
    }
}

/// The host API under `cfg` with `temps` against the f64 reference; returns the
/// entries compared.
#[allow(clippy::too_many_arguments)]
fn check_sampled(
    ctx: &Context,
    cfg: &LossConfig,
    case: &LossCase,
    dtype: DType,
    grad: DType,
    using: Use,
    temps: Option<&[f32]>,
) -> usize {
    let logits = Logits::from_f32(dtype, &case.logits);
    let mut batch = case.batch(logits.host(), using);
    batch.temperatures = temps;
    let what = format!(
        "{} {dtype}→{grad} {cfg:?} temps {}",
        name(ctx),
        temps.is_some()
    );
    let got = ctx
        .policy_loss_parts(cfg, &[HostPart::from(batch)], Some(grad))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    // the case's own reference, under these temperatures
    let mut with_temps = case.clone();
    with_temps.temps = temps.map(<[f32]>::to_vec);
    let want = with_temps.reference(cfg, &logits.values(), using, false);
    let tol = |w: f64| 2e-5 + 2e-5 * w.abs();
    let m = &got.metrics;
    for (label, g, w) in [
        ("loss", m.loss, want.loss),
        ("pg_clipfrac", m.pg_clipfrac, want.metrics.pg_clipfrac),
        ("ppo_kl", m.ppo_kl, want.metrics.ppo_kl),
        ("kl", m.kl, want.metrics.kl),
        ("entropy_mean", m.entropy_mean, want.metrics.entropy_mean),
        (
            "nonfinite_rows",
            m.nonfinite_rows,
            want.metrics.nonfinite_rows,
        ),
    ] {
        close(g, w, tol(w)).unwrap_or_else(|e| panic!("{what}: {label}: {e}"));
    }
    assert_eq!(m.invalid_input_rows, 0.0, "{what}: invalid_input_rows");
    let mut n = 6;
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
    let g = got
        .grad
        .as_ref()
        .expect("a gradient was asked for")
        .to_f32();
    compare::logits_grad(&g, &want.grad, grad.into())
        .unwrap_or_else(|e| panic!("{what}: grad {e}"));
    let v = case.vocab as usize;
    for r in (0..case.rows()).filter(|&r| case.mask[r] <= 0.0) {
        assert!(
            g[r * v..(r + 1) * v].iter().all(|&x| x == 0.0),
            "{what}: masked-out row {r} (temperature {:?}) has a gradient",
            temps.map(|t| t[r])
        );
    }
    n + g.len()
}

/// Every mode with each option (the dtypes, gradient dtypes and advantages cycled), and
/// every aggregation with one, on every adapter.
#[test]
fn every_mode_and_aggregation_under_the_sampler() {
    let case = LossCase::new(71, 4, 5, 211);
    let temps = temperatures(&case, 72);
    let mut tally = Tally::new("entries under temperatures and softcap against the reference");
    for ctx in contexts() {
        let mut n = 0;
        for (i, &mode) in PolicyLossMode::ALL.iter().enumerate() {
            for (j, &opt) in OPTS.iter().enumerate() {
                let cfg = with_opt(&sampler_config(mode), opt);
                let t = (!matches!(opt, Opt::Softcap)).then_some(&temps[..]);
                let using = Use {
                    per_token_adv: (i + j) % 2 == 1,
                    ..ALL_INPUTS
                };
                let (dtype, grad) = (DType::ALL[(i + j) % 3], DType::ALL[(i + 2 * j) % 3]);
                n += check_sampled(ctx, &cfg, &case, dtype, grad, using, t);
            }
        }
        for (k, (agg, global)) in aggregations(13.0).into_iter().enumerate() {
            let cfg = LossConfig {
                loss_agg_mode: agg,
                global_normalizer: global,
                ..with_opt(&sampler_config(PolicyLossMode::PpoClip), OPTS[k % 3])
            };
            let t = (!matches!(OPTS[k % 3], Opt::Softcap)).then_some(&temps[..]);
            let dtype = DType::ALL[k % 3];
            n += check_sampled(ctx, &cfg, &case, dtype, DType::F32, ALL_INPUTS, t);
        }
        tally.count(ctx, n);
    }
    tally.finish();
}

/// ppo_clip with dual-clip, a KL term and an entropy bonus: every term of the gradient.
fn sampler_config(mode: PolicyLossMode) -> LossConfig {
    let dual = (mode == PolicyLossMode::PpoClip).then_some(3.0);
    let agg = LossAggMode::SeqMeanTokenMean;
    loss_config(mode, agg, KlEstimator::K3, (1.0, 0.05, 0.01, dual))
}

/// Saturated logits (±60 and ±inf against c = 5): s stays in [−c, c], the slope goes to
/// 0, and nothing becomes NaN.
#[test]
fn the_softcap_saturates_without_nan() {
    let mut case = LossCase::new(73, 2, 4, 67);
    let v = case.vocab as usize;
    for r in 0..case.rows() {
        case.logits[r * v + (r * 7) % v] = 60.0;
        case.logits[r * v + (r * 11 + 3) % v] = -60.0;
        if r == 2 {
            case.logits[r * v + 5] = f32::INFINITY;
            case.logits[r * v + 6] = f32::NEG_INFINITY;
        }
    }
    let cfg = LossConfig {
        logit_softcap: Some(5.0),
        ..sampler_config(PolicyLossMode::PpoClip)
    };
    let mut tally = Tally::new("entries with saturated softcap against the reference");
    for ctx in contexts() {
        let n = check_sampled(ctx, &cfg, &case, DType::F32, DType::F32, ALL_INPUTS, None);
        tally.count(ctx, n);
    }
    tally.finish();
}

/// The same bits whatever the batching: the batch as one part and as two, run twice.
#[test]
fn the_same_bits_in_parts_and_run_to_run() {
    let case = LossCase::new(79, 4, 3, 97);
    let temps = temperatures(&case, 80);
    let cfg = with_opt(&sampler_config(PolicyLossMode::PpoClip), Opt::Both);
    let logits = Logits::from_f32(DType::Bf16, &case.logits);
    let (rows, v) = (6, case.vocab as usize);
    let halves = [
        Logits::from_f32(DType::Bf16, &case.logits[..rows * v]),
        Logits::from_f32(DType::Bf16, &case.logits[rows * v..]),
    ];
    let mut tally = Tally::new("runs bitwise equal across parts and repeats");
    for ctx in contexts() {
        let mut whole = case.batch(logits.host(), ALL_INPUTS);
        whole.temperatures = Some(&temps);
        let run = |parts: &[HostPart<'_>]| -> HostLoss {
            ctx.policy_loss_parts(&cfg, parts, Some(DType::F32))
                .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)))
        };
        let one = run(&[whole.into()]);
        let again = run(&[whole.into()]);
        assert!(same_bits(&one, &again), "{}: run to run", name(ctx));
        // two parts of two sequences each
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

/// A bad temperature on a read row: the host path's error names `temperatures` and
/// the row; the device path makes the row NaN and counts it; `--temperature` with
/// per-row ones is an error naming `temperature`; a bad softcap names `logit_softcap`.
#[test]
fn bad_temperatures_and_softcaps_are_named() {
    let case = LossCase::new(83, 2, 4, 31);
    let logits = Logits::from_f32(DType::F32, &case.logits);
    let cfg = sampler_config(PolicyLossMode::PpoClip);
    let mut tally = Tally::new("bad temperatures named or counted");
    for ctx in contexts() {
        for bad in [0.0f32, -0.5, f32::NAN, f32::INFINITY, 1e-45] {
            let mut temps = temperatures(&case, 84);
            let row = 2;
            assert!(case.mask[row] > 0.0);
            temps[row] = bad;
            let mut batch = case.batch(logits.host(), ALL_INPUTS);
            batch.temperatures = Some(&temps);
            match ctx.policy_loss(&cfg, &batch, Some(DType::F32)) {
                Err(Error::InvalidInput {
                    tensor: RowInput::Temperatures,
                    row: r,
                    ..
                }) => assert_eq!(r, row, "{}: the first bad row", name(ctx)),
                other => panic!("{}: temperature {bad}: {other:?}", name(ctx)),
            }
            let m = device_metrics(ctx, &cfg, &case, &temps);
            assert_eq!(m.invalid_input_rows, 1.0, "{}: τ = {bad}", name(ctx));
            let first = m.invalid_input.expect("the first bad row");
            assert_eq!(
                (first.tensor, first.row),
                (RowInput::Temperatures, row as u32),
                "{}: τ = {bad}",
                name(ctx)
            );
            assert!(m.loss.is_nan(), "{}: τ = {bad}: the loss is NaN", name(ctx));
            tally.count(ctx, 2);
        }
        let temps = temperatures(&case, 85);
        let mut batch = case.batch(logits.host(), ALL_INPUTS);
        batch.temperatures = Some(&temps);
        let hot = LossConfig {
            temperature: 0.7,
            ..cfg
        };
        assert_arg(ctx.policy_loss(&hot, &batch, None), "temperature");
        for c in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let capped = LossConfig {
                logit_softcap: Some(c),
                ..cfg
            };
            assert_arg(ctx.policy_loss(&capped, &batch, None), "logit_softcap");
        }
        let short = &temps[..temps.len() - 1];
        batch.temperatures = Some(short);
        assert_arg(ctx.policy_loss(&cfg, &batch, None), "temperatures");
        tally.count(ctx, 6);
    }
    tally.finish();
}

/// The metrics of the device path (no host check) with `temps`.
fn device_metrics(
    ctx: &Context,
    cfg: &LossConfig,
    case: &LossCase,
    temps: &[f32],
) -> wgpu_policy_loss::Metrics {
    use wgpu_policy_loss::{Advantages, F32View, Gradient, LogitsView, LossInputs, TargetsView};
    let rows = case.rows() as u32;
    let x = ctx.upload("logits", bytemuck::cast_slice(&case.logits));
    let b = case.upload_rows(ctx);
    let t = ctx.upload("temperatures", bytemuck::cast_slice(temps));
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
    .with_temperatures(F32View::new(&t));
    record_and_read(ctx, *cfg, &inputs, Gradient::InPlace, &[]).0
}

/// The fused head under temperatures and a softcap: chunks that do not divide the
/// rows, bf16 and f32 inputs, ∂h and ∂W against the reference's.
#[test]
fn the_head_under_the_sampler() {
    use common::head::{check_head, ppo, HeadCase};
    let mut tally = Tally::new("head calls under temperatures and softcap");
    for ctx in contexts() {
        for (k, dtype) in [DType::Bf16, DType::F32].into_iter().enumerate() {
            let mut hc = HeadCase::new(91 + k as u64, (3, 5, 143, 24), dtype);
            hc.case.temps = Some(temperatures(&hc.case, 92));
            let cfg = LossConfig {
                logit_softcap: (k == 0).then_some(4.0),
                ..ppo()
            };
            for chunk in [Some(4), None] {
                check_head(ctx, &cfg, &hc, Some(dtype), chunk, (ALL_INPUTS, false));
                tally.count(ctx, 1);
            }
        }
    }
    tally.finish();
}

/// Rows longer than one binding (column blocks whose partials are merged): the
/// temperatures and the softcap reach the partials' sweep.
#[test]
fn rows_longer_than_one_binding() {
    let mut tally = Tally::new("split rows under temperatures and softcap");
    for full in opened() {
        let a = full.adapter().expect("opened on an adapter");
        let limits = wgpu_policy_loss::wgpu::Limits {
            max_storage_buffer_binding_size: 1 << 18,
            ..a.limits()
        };
        let small = Context::from_adapter_with_limits(a, limits)
            .unwrap_or_else(|e| panic!("{}: {e}", name(&full)));
        let mut case = LossCase::new(97, 2, 2, 150_000);
        case.targets[0] = case.vocab - 1;
        case.temps = Some(temperatures(&case, 98));
        for mode in [PolicyLossMode::PpoClip, PolicyLossMode::Gspo] {
            let cfg = with_opt(&sampler_config(mode), Opt::Both);
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
