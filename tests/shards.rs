//! A vocabulary split into shards (`PolicyLoss::record_shard_partials` →
//! all-gather → `record_shard_loss`, and the host forms): uneven splits into 2, 3 and
//! 7 shards (shards of one column, a shard that owns no target) give the unsharded
//! loss, metrics, per-row outputs and gradient in every mode and dtype on every
//! adapter; every rank gets the same bits; one shard is the unsharded call bit for bit;
//! two adapters as two ranks; rows longer than one binding split into column blocks.

mod common;

use common::*;
use wgpu_policy_loss::reference::compare::{self, Tolerance};
use wgpu_policy_loss::{
    Context, DType, Error, HostLoss, HostPart, KlEstimator, LossAggMode, LossConfig, Paths,
    PolicyLossMode, RolloutCorrection, RolloutLevel, RolloutMode, VocabShards,
};

const VOCAB: u32 = 61;

/// Uneven splits of 61 columns: two halves; a one-column shard first; seven shards,
/// two of one column (shard 3, column 20, owns no target: see `case`).
fn splits() -> Vec<VocabShards> {
    [&[30, 31][..], &[1, 40, 20], &[1, 9, 10, 1, 15, 20, 5]]
        .iter()
        .map(|w| VocabShards::new(w).unwrap())
        .collect()
}

fn config(mode: PolicyLossMode, agg: LossAggMode) -> LossConfig {
    LossConfig {
        mode,
        loss_agg_mode: agg,
        kl_loss_type: KlEstimator::K3,
        kl_coef: 0.1,
        entropy_coeff: 0.01,
        clip_ratio_c: Some(3.0),
        temperature: 0.9,
        dro_beta: (mode == PolicyLossMode::Dro).then_some(0.3),
        ..LossConfig::default()
    }
}

/// Three sequences of five rows over 61 columns, no target in column 20.
fn case(seed: u64) -> LossCase {
    let mut c = LossCase::new(seed, 3, 5, VOCAB);
    for t in &mut c.targets {
        if *t == 20 {
            *t = 21;
        }
    }
    c
}

/// Columns `cols` of every row of `l` (row-major, `vocab` wide), in its dtype.
fn columns(l: &Logits, vocab: u32, cols: std::ops::Range<u32>) -> Logits {
    fn take<T: Copy>(v: &[T], vocab: u32, cols: &std::ops::Range<u32>) -> Vec<T> {
        v.chunks(vocab as usize)
            .flat_map(|row| row[cols.start as usize..cols.end as usize].iter().copied())
            .collect()
    }
    Logits {
        dtype: l.dtype,
        f32: take(&l.f32, vocab, &cols),
        f16: take(&l.f16, vocab, &cols),
        bf16: take(&l.bf16, vocab, &cols),
    }
}

/// The sharded loss of `case` over `shards`, rank k on `ranks[k % ranks.len()]`: each
/// rank's partials, gathered in rank order on the host, and each rank's loss; `combine`
/// overrides which context each rank's second step runs on.
fn sharded(
    ranks: &[&Context],
    cfg: &LossConfig,
    case: &LossCase,
    l: &Logits,
    shards: &VocabShards,
    grad: Option<DType>,
) -> Vec<HostLoss> {
    let on = |k: usize| ranks[k % ranks.len()];
    let pieces: Vec<Logits> = (0..shards.len())
        .map(|k| columns(l, case.vocab, shards.range(k)))
        .collect();
    let gathered: Vec<f32> = (0..shards.len())
        .flat_map(|k| {
            on(k)
                .shard_partials(cfg, shards, k, pieces[k].host(), &case.targets)
                .unwrap_or_else(|e| panic!("{} rank {k}: {e}", name(on(k))))
        })
        .collect();
    (0..shards.len())
        .map(|k| {
            let mut batch = case.batch(pieces[k].host(), ALL_INPUTS);
            batch.vocab = shards.width(k);
            let part = HostPart {
                batch,
                rollout_logprobs: Some(&case.rollout[..]),
            };
            on(k)
                .policy_loss_shard(cfg, shards, k, part, &gathered, grad)
                .unwrap_or_else(|e| panic!("{} rank {k}: {e}", name(on(k))))
        })
        .collect()
}

/// The unsharded loss of the same batch.
fn whole(
    ctx: &Context,
    cfg: &LossConfig,
    case: &LossCase,
    l: &Logits,
    grad: Option<DType>,
) -> HostLoss {
    let part = HostPart {
        batch: case.batch(l.host(), ALL_INPUTS),
        rollout_logprobs: Some(&case.rollout[..]),
    };
    ctx.policy_loss_parts(cfg, &[part], grad)
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)))
}

/// The ranks' gradients put back together, `rows × V` as f32.
fn joined_grad(got: &[HostLoss], shards: &VocabShards, rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * shards.vocab() as usize];
    for (k, r) in got.iter().enumerate() {
        let g = r.grad.as_ref().expect("a gradient").to_f32();
        let (o, w) = (shards.offset(k) as usize, shards.width(k) as usize);
        for row in 0..rows {
            let v = shards.vocab() as usize;
            out[row * v + o..row * v + o + w].copy_from_slice(&g[row * w..(row + 1) * w]);
        }
    }
    out
}

/// `got` (a sharded result, its gradient joined) against the unsharded `want`: f32
/// rounding apart, the merge summing in another order; 16-bit gradients may round to
/// the neighbouring value.
fn assert_close(what: &str, got: &HostLoss, grad: &[f32], want: &HostLoss) {
    let tol = |w: f64| 1e-5 + 1e-5 * w.abs();
    let (g, w) = (metric_bits(&got.metrics), metric_bits(&want.metrics));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let (a, b) = (f32::from_bits(*a), f32::from_bits(*b) as f64);
        close(a, b, tol(b)).unwrap_or_else(|e| panic!("{what}: metric {i}: {e}"));
    }
    assert_eq!(
        got.metrics.invalid_target, want.metrics.invalid_target,
        "{what}"
    );
    for (r, (a, b)) in got.logprobs.iter().zip(&want.logprobs).enumerate() {
        if b.is_nan() {
            assert!(a.is_nan(), "{what}: logprobs[{r}] = {a}, want NaN");
            continue;
        }
        close(*a, *b as f64, tol(*b as f64))
            .unwrap_or_else(|e| panic!("{what}: logprobs[{r}]: {e}"));
        assert!(*a <= 0.0, "{what}: logprobs[{r}] = {a} > 0");
    }
    for (r, (a, b)) in got.entropy.iter().zip(&want.entropy).enumerate() {
        close(*a, *b as f64, tol(*b as f64))
            .unwrap_or_else(|e| panic!("{what}: entropy[{r}]: {e}"));
    }
    // two computations, each within the library's rule of the exact gradient
    let wg = want.grad.as_ref().expect("a gradient");
    let wv: Vec<f64> = wg.to_f32().iter().map(|&b| b as f64).collect();
    let rule = Tolerance::logits_grad(wg.dtype.into());
    compare::within(grad, &wv, rule.plus(rule))
        .unwrap_or_else(|e| panic!("{what}: grad {e} (vocab {VOCAB}), unsharded"));
}

#[test]
fn uneven_shards_give_the_unsharded_loss_in_every_mode_and_dtype() {
    let case = case(71);
    for ctx in contexts() {
        for (s, shards) in splits().iter().enumerate() {
            for (m, mode) in PolicyLossMode::ALL.into_iter().enumerate() {
                for dtype in DType::ALL {
                    let agg = LossAggMode::ALL[(s + m) % LossAggMode::ALL.len()];
                    let mut cfg = config(mode, agg);
                    if m % 2 == 1 {
                        cfg.rollout_correction = Some(RolloutCorrection::new(
                            RolloutLevel::Token,
                            RolloutMode::Truncate,
                        ));
                    }
                    let l = Logits::from_f32(dtype, &case.logits);
                    let want = whole(ctx, &cfg, &case, &l, Some(dtype));
                    let got = sharded(&[ctx], &cfg, &case, &l, shards, Some(dtype));
                    let what = format!(
                        "{} {:?} {mode:?} {agg:?} {dtype}",
                        name(ctx),
                        shards.widths()
                    );
                    // every rank merged the same partials: the same bits everywhere
                    for (k, r) in got.iter().enumerate() {
                        assert_eq!(
                            metric_bits(&r.metrics),
                            metric_bits(&got[0].metrics),
                            "{what}: rank {k}"
                        );
                        assert_eq!(
                            f32_bits(&r.logprobs),
                            f32_bits(&got[0].logprobs),
                            "{what}: rank {k}"
                        );
                        assert_eq!(
                            f32_bits(&r.entropy),
                            f32_bits(&got[0].entropy),
                            "{what}: rank {k}"
                        );
                    }
                    let grad = joined_grad(&got, shards, case.rows());
                    assert_close(&what, &got[0], &grad, &want);
                }
            }
        }
    }
}

#[test]
fn one_shard_is_the_unsharded_call_bit_for_bit() {
    let case = case(72);
    let one = VocabShards::new(&[VOCAB]).unwrap();
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for dtype in DType::ALL {
                let cfg = config(mode, LossAggMode::TokenMean);
                let l = Logits::from_f32(dtype, &case.logits);
                let want = whole(ctx, &cfg, &case, &l, Some(dtype));
                let got = sharded(&[ctx], &cfg, &case, &l, &one, Some(dtype));
                let what = format!("{} {mode:?} {dtype}", name(ctx));
                assert!(
                    same_bits(&got[0], &want),
                    "{what}: one shard differs from no split"
                );
            }
        }
    }
}

/// Two adapters as two ranks (here lavapipe on Vulkan and llvmpipe on GL), each with
/// its own device, exchanging partials through the host: every rank's loss is the
/// unsharded one, and the statistics merged from the same partials have the same bits
/// whichever adapter merged them where the adapters are one device behind two APIs
/// (transcendentals round as each device does, so other pairs agree to within ulps).
#[test]
fn two_adapters_as_two_ranks() {
    let ranks: Vec<&Context> = natives().collect();
    if ranks.len() < 2 {
        skipped_part(format!(
            "ranks on two adapters: one adapter here, both ranks run on {}",
            name(ranks[0])
        ));
    }
    let case = case(73);
    let shards = VocabShards::new(&[25, 36]).unwrap();
    for mode in PolicyLossMode::ALL {
        let cfg = config(mode, LossAggMode::SeqMeanTokenMean);
        let l = Logits::from_f32(DType::Bf16, &case.logits);
        let got = sharded(&ranks, &cfg, &case, &l, &shards, Some(DType::F32));
        let want = whole(ranks[0], &cfg, &case, &l, Some(DType::F32));
        let what = format!(
            "{mode:?} ranks on {:?}",
            ranks.iter().map(|c| name(c)).collect::<Vec<_>>()
        );
        let grad = joined_grad(&got, &shards, case.rows());
        assert_close(&what, &got[0], &grad, &want);
        assert_close(&what, &got[1], &grad, &want);
        // the same gathered partials merged on every adapter
        let per_adapter: Vec<Vec<HostLoss>> = ranks
            .iter()
            .map(|c| sharded(&[c], &cfg, &case, &l, &shards, Some(DType::F32)))
            .collect();
        for (c, r) in ranks.iter().zip(&per_adapter).skip(1) {
            let same_device = c.adapter_info().name == ranks[0].adapter_info().name;
            if same_device {
                assert_eq!(
                    f32_bits(&r[0].logprobs),
                    f32_bits(&per_adapter[0][0].logprobs),
                    "{what}: {}",
                    name(c)
                );
                assert_eq!(
                    f32_bits(&r[0].entropy),
                    f32_bits(&per_adapter[0][0].entropy),
                    "{what}: {}",
                    name(c)
                );
                assert_eq!(
                    metric_bits(&r[0].metrics),
                    metric_bits(&per_adapter[0][0].metrics),
                    "{what}: {}",
                    name(c)
                );
            }
        }
    }
}

/// Rows longer than one storage binding: the library splits them into column blocks
/// (V = 300,000 f32 and 600,000 bf16 under a 1 MiB binding, an error before), and a
/// shard whose own row is longer than a binding does the same; both match the f64
/// reference and the unsplit call on the adapter's own limits.
#[test]
fn rows_longer_than_one_binding() {
    for full in opened() {
        let a = full.adapter().expect("opened on an adapter");
        let small = Context::from_adapter_with_limits(
            a,
            wgpu_policy_loss::wgpu::Limits {
                max_storage_buffer_binding_size: 1 << 20,
                ..a.limits()
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", name(&full)));
        for small in [small.clone(), small.with_paths(Paths::FALLBACK)] {
            for (dtype, vocab) in [(DType::F32, 300_000u32), (DType::Bf16, 600_000)] {
                let mut case = LossCase::new(74, 2, 2, vocab);
                case.targets[0] = vocab - 1; // the last column
                case.targets[2] = 0;
                let l = Logits::from_f32(dtype, &case.logits);
                for mode in [
                    PolicyLossMode::PpoClip,
                    PolicyLossMode::Gspo,
                    PolicyLossMode::KlCov,
                ] {
                    let cfg = config(mode, LossAggMode::TokenMean);
                    let what = format!("{} {dtype} V={vocab} {mode:?}", name(&small));
                    let got = whole(&small, &cfg, &case, &l, Some(dtype));
                    // loss, metrics, per-row outputs and gradient against the f64 reference
                    check_loss_with(&small, &cfg, &case, dtype, Some(dtype), ALL_INPUTS, true);
                    let unsplit = whole(&full, &cfg, &case, &l, Some(dtype));
                    let grad = got.grad.as_ref().unwrap().to_f32();
                    assert_close(&what, &got, &grad, &unsplit);
                    // two shards of which each row alone is longer than the binding
                    let shards = VocabShards::even(vocab, 2).unwrap();
                    let parts = sharded(&[&small], &cfg, &case, &l, &shards, Some(dtype));
                    let grad = joined_grad(&parts, &shards, case.rows());
                    assert_close(&format!("{what} in 2 shards"), &parts[0], &grad, &unsplit);
                }
            }
        }
    }
}

#[test]
fn bad_shard_calls_are_errors_naming_the_argument() {
    let case = case(75);
    let shards = VocabShards::new(&[30, 31]).unwrap();
    let cfg = config(PolicyLossMode::PpoClip, LossAggMode::TokenMean);
    let l = Logits::from_f32(DType::F32, &case.logits);
    let left = columns(&l, VOCAB, 0..30);
    for ctx in natives() {
        let arg = |e: Error| match e {
            Error::InvalidArgument { arg, .. } => arg.to_string(),
            Error::TargetOutOfRange { row, .. } => format!("targets row {row}"),
            other => panic!("{other}"),
        };
        let e = ctx
            .shard_partials(&cfg, &shards, 2, left.host(), &case.targets)
            .unwrap_err();
        assert_eq!(arg(e), "rank");
        // shard 1's width with shard 0's columns
        let e = ctx
            .shard_partials(&cfg, &shards, 1, left.host(), &case.targets)
            .unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { .. }), "{e}");
        let gathered: Vec<f32> = (0..2)
            .flat_map(|k| {
                let cols = columns(&l, VOCAB, shards.range(k));
                ctx.shard_partials(&cfg, &shards, k, cols.host(), &case.targets)
                    .unwrap()
            })
            .collect();
        let mut batch = case.batch(left.host(), ALL_INPUTS);
        batch.vocab = 30;
        let e = ctx
            .policy_loss_shard(&cfg, &shards, 0, batch, &gathered[1..], None)
            .unwrap_err();
        assert_eq!(arg(e), "gathered");
        let mut wrong = batch;
        wrong.vocab = 31;
        let e = ctx
            .policy_loss_shard(&cfg, &shards, 0, wrong, &gathered, None)
            .unwrap_err();
        assert_eq!(arg(e), "vocab");
        // a masked-in id that no shard owns is the error naming its first row
        let mut bad = case.targets.clone();
        bad[4] = VOCAB;
        bad[6] = VOCAB + 3;
        let gathered: Vec<f32> = (0..2)
            .flat_map(|k| {
                let cols = columns(&l, VOCAB, shards.range(k));
                ctx.shard_partials(&cfg, &shards, k, cols.host(), &bad)
                    .unwrap()
            })
            .collect();
        let mut batch = case.batch(left.host(), ALL_INPUTS);
        batch.vocab = 30;
        batch.targets = &bad;
        assert_eq!(case.mask[4], 1.0);
        let e = ctx
            .policy_loss_shard(&cfg, &shards, 0, batch, &gathered, Some(DType::F32))
            .unwrap_err();
        assert_eq!(arg(e), "targets row 4", "{}", name(ctx));
    }
}

/// The rules of docs/MATH.md#bad-input for rows that are not all finite, across shards:
/// a row whose whole shard is -inf, a target logit of -inf, a NaN in one shard, +inf in
/// one shard. The sharded results are the unsharded ones: the same non-finite rows, NaN
/// where it is NaN, and the finite values to rounding.
#[test]
fn non_finite_rows_follow_the_unsharded_rules() {
    let mut case = case(76);
    let v = VOCAB as usize;
    let shards = VocabShards::new(&[1, 40, 20]).unwrap();
    for c in 1..41 {
        case.logits[v + c] = f32::NEG_INFINITY; // row 1: shard 1 all -inf
    }
    case.targets[2] = 5;
    case.mask[2] = 1.0;
    case.logits[2 * v + 5] = f32::NEG_INFINITY; // row 2: the target's logit
    case.logits[4 * v + 50] = f32::NAN; // row 4: a NaN in shard 2
    case.logits[11 * v] = f32::INFINITY; // row 11: +inf in the one-column shard
    for ctx in natives() {
        for mode in [PolicyLossMode::Reinforce, PolicyLossMode::PpoClip] {
            let cfg = config(mode, LossAggMode::TokenMean);
            let l = Logits::from_f32(DType::F32, &case.logits);
            let want = whole(ctx, &cfg, &case, &l, Some(DType::F32));
            let got = sharded(&[ctx], &cfg, &case, &l, &shards, Some(DType::F32));
            let what = format!("{} {mode:?}", name(ctx));
            let m = (&got[0].metrics, &want.metrics);
            assert_eq!(m.0.nonfinite_rows, m.1.nonfinite_rows, "{what}");
            assert!(m.1.nonfinite_rows >= 2.0, "{what}: {}", m.1.nonfinite_rows);
            assert_eq!(
                m.0.loss.is_nan(),
                m.1.loss.is_nan(),
                "{what}: loss {} vs {}",
                m.0.loss,
                m.1.loss
            );
            for (r, (a, b)) in got[0].logprobs.iter().zip(&want.logprobs).enumerate() {
                let same = a.to_bits() == b.to_bits()
                    || (a.is_nan() && b.is_nan())
                    || (a - b).abs() <= 1e-5 * (1.0 + b.abs());
                assert!(same, "{what}: logprobs[{r}] = {a}, unsharded {b}");
            }
            for (r, (a, b)) in got[0].entropy.iter().zip(&want.entropy).enumerate() {
                let same = a.to_bits() == b.to_bits()
                    || (a.is_nan() && b.is_nan())
                    || (a - b).abs() <= 1e-5 * (1.0 + b.abs());
                assert!(same, "{what}: entropy[{r}] = {a}, unsharded {b}");
            }
            let grad = joined_grad(&got, &shards, case.rows());
            // non-finite where the unsharded one is, else both within the rule
            let wg = want.grad.as_ref().unwrap();
            let wv: Vec<f64> = wg.to_f32().iter().map(|&b| b as f64).collect();
            let rule = Tolerance::logits_grad(wg.dtype.into());
            compare::within(&grad, &wv, rule.plus(rule))
                .unwrap_or_else(|e| panic!("{what}: grad {e} (vocab {v}), unsharded"));
        }
    }
}

/// The device form's own bad input: partial statistics off a 16-byte boundary, the
/// partials written over an input, the gathered partials in a buffer an output writes.
#[test]
fn bad_device_buffers_are_errors_naming_the_argument() {
    use wgpu_policy_loss::{
        wgpu::BufferUsages, Advantages, F32View, Gradient, LogitsView, LossBuffers, LossInputs,
        LossOutputs, PolicyLoss, TargetsView,
    };
    let case = case(77);
    let shards = VocabShards::new(&[30, 31]).unwrap();
    let l = Logits::from_f32(DType::F32, &case.logits);
    let left = columns(&l, VOCAB, 0..30);
    let rows = case.rows() as u32;
    for ctx in natives() {
        let loss = PolicyLoss::new(ctx, LossConfig::default()).unwrap();
        let x = ctx.upload("x", left.bytes());
        let y = ctx.upload("y", bytemuck::cast_slice(&case.targets));
        let mask = ctx.upload("mask", bytemuck::cast_slice(&case.mask));
        let adv = ctx.upload("adv", bytemuck::cast_slice(&case.adv_seq));
        let storage = BufferUsages::STORAGE | BufferUsages::COPY_SRC;
        let gathered = ctx.buffer("gathered", shards.gathered_bytes(rows) + 16, storage);
        let logits = LogitsView::new(&x, DType::F32, rows, 30)
            .with_sequences(case.rows_per_seq, case.rows_per_seq as u64 * 30);
        let targets = TargetsView::new(&y);
        let arg = |r: wgpu_policy_loss::Result<()>| match r.unwrap_err() {
            Error::InvalidArgument { arg, .. } => arg,
            other => panic!("{}: {other}", name(ctx)),
        };
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let off = F32View::at(&gathered, 4);
        let r = loss.record_shard_partials(&mut enc, &shards, 0, &logits, &targets, off);
        assert_eq!(arg(r), "partials");
        let over_input = F32View::new(&y);
        let r = loss.record_shard_partials(&mut enc, &shards, 0, &logits, &targets, over_input);
        assert_eq!(arg(r), "partials");
        let inputs = LossInputs::new(
            logits,
            targets,
            F32View::new(&mask),
            Advantages::PerSequence(F32View::new(&adv)),
        );
        let out = LossBuffers::new(ctx, rows);
        let shared = LossOutputs {
            metrics: F32View::new(&out.metrics),
            logprobs: Some(F32View::new(&gathered)),
            entropy: None,
            lse: None,
        };
        let mut record = |g: F32View<'_>, o: &LossOutputs<'_>| {
            loss.record_shard_loss(&mut enc, &shards, 0, (inputs, Gradient::None), g, o)
        };
        let outputs = out.outputs();
        assert_eq!(arg(record(F32View::at(&gathered, 4), &outputs)), "gathered");
        // an output written over the partials the call reads
        assert_eq!(
            arg(record(F32View::new(&gathered), &shared)),
            "outputs.logprobs"
        );
        // the same call with good buffers records
        record(F32View::new(&gathered), &outputs).unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    }
}

/// The 2026 options over a split vocabulary: the sequence pass reads the merged
/// statistics, as the unsharded call's.
#[test]
fn uneven_shards_give_the_unsharded_loss_with_the_2026_options() {
    let case = case(73);
    let shards = &splits()[1];
    let l = Logits::from_f32(DType::F32, &case.logits);
    for ctx in contexts() {
        for (label, cfg) in options_2026().into_iter().step_by(2) {
            let want = whole(ctx, &cfg, &case, &l, Some(DType::F32));
            let got = sharded(&[ctx], &cfg, &case, &l, shards, Some(DType::F32));
            let grad = joined_grad(&got, shards, case.rows());
            assert_close(&format!("{} {label}", name(ctx)), &got[0], &grad, &want);
        }
    }
}
