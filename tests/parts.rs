//! One loss over logits in several buffers (`PolicyLoss::record_parts`, and
//! `Context::policy_loss_parts` on the host): every aggregation mode over the whole
//! batch, with the bits of one buffer where the rows are the same, on every adapter and
//! path; parts of other sequence lengths against the f64 reference; parts sharing a
//! buffer; bad parts named.

mod common;

use common::*;
use wgpu_policy_loss::{
    reference, Advantages, DType, Error, F32View, Gradient, HostBatch, HostLoss, KlEstimator,
    LogitsView, LossAggMode, LossBuffers, LossConfig, LossInputs, Metrics, PolicyLoss,
    PolicyLossMode, TargetsView,
};

fn config(mode: PolicyLossMode, (agg, global): (LossAggMode, Option<f32>)) -> LossConfig {
    LossConfig {
        mode,
        loss_agg_mode: agg,
        global_normalizer: global,
        kl_loss_type: KlEstimator::K3,
        kl_coef: 0.1,
        entropy_coeff: 0.01,
        clip_ratio_c: Some(3.0),
        dro_beta: (mode == PolicyLossMode::Dro).then_some(0.3),
        ..LossConfig::default()
    }
}

/// A case's sequences `[s0, s1)` as a host batch over `logits` (the whole case's).
fn part<'a>(
    case: &'a LossCase,
    logits: &'a Logits,
    (s0, s1): (usize, usize),
    per_token: bool,
) -> HostBatch<'a> {
    let rps = case.rows_per_seq as usize;
    let (r0, r1) = (s0 * rps, s1 * rps);
    let v = case.vocab as usize;
    let host = match logits.dtype {
        DType::F32 => wgpu_policy_loss::HostLogits::F32(&logits.f32[r0 * v..r1 * v]),
        DType::F16 => wgpu_policy_loss::HostLogits::F16(&logits.f16[r0 * v..r1 * v]),
        DType::Bf16 => wgpu_policy_loss::HostLogits::Bf16(&logits.bf16[r0 * v..r1 * v]),
    };
    HostBatch {
        kept: None,
        temperatures: None,
        logits: host,
        vocab: case.vocab,
        rows_per_seq: Some(case.rows_per_seq),
        targets: &case.targets[r0..r1],
        mask: &case.mask[r0..r1],
        advantages: if per_token {
            &case.adv_tok[r0..r1]
        } else {
            &case.adv_seq[s0..s1]
        },
        old_logprobs: Some(&case.old[r0..r1]),
        ref_logprobs: Some(&case.refp[r0..r1]),
    }
}

/// The case as one batch and as parts split at the sequences `cuts`.
fn whole_and_parts(
    ctx: &wgpu_policy_loss::Context,
    cfg: &LossConfig,
    case: &LossCase,
    logits: &Logits,
    cuts: &[usize],
    per_token: bool,
    grad: Option<DType>,
) -> (HostLoss, HostLoss) {
    let seqs = case.seqs as usize;
    let whole = ctx
        .policy_loss(cfg, &part(case, logits, (0, seqs), per_token), grad)
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    let bounds: Vec<usize> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .chain(std::iter::once(seqs))
        .collect();
    let batches: Vec<HostBatch<'_>> = bounds
        .windows(2)
        .map(|w| part(case, logits, (w[0], w[1]), per_token))
        .collect();
    let parts = ctx
        .policy_loss_parts(cfg, &batches, grad)
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    (whole, parts)
}

/// The parts' loss, metrics, per-row outputs and gradient have the bits of the same
/// rows in one buffer, in every mode and aggregation: the token counts, the weights and
/// the loss's sum run in the same order either way. Cuts include an empty part.
#[test]
fn parts_have_the_bits_of_one_buffer() {
    // sequence 1 is masked out entirely: the seq-mean modes must not count it
    let case = LossCase::new(5, 6, 5, 37);
    for ctx in contexts() {
        for dtype in DType::ALL {
            let logits = Logits::from_f32(dtype, &case.logits);
            for mode in PolicyLossMode::ALL {
                for (i, agg) in aggregations(20.0).into_iter().enumerate() {
                    let cfg = config(mode, agg);
                    let cuts: &[usize] = [&[1, 4][..], &[2, 2, 3], &[5]][i % 3];
                    let (whole, parts) =
                        whole_and_parts(ctx, &cfg, &case, &logits, cuts, i % 2 == 1, Some(dtype));
                    assert!(
                        same_bits(&whole, &parts),
                        "{} {dtype} {mode:?} {agg:?} cuts {cuts:?}:\n{:?}\nvs\n{:?}",
                        name(ctx),
                        whole.metrics,
                        parts.metrics
                    );
                }
            }
        }
    }
}

/// Parts whose sequences have other lengths (4 and 7 rows) are one batch whose shorter
/// sequences are padded with masked-out rows: checked against the f64 reference on
/// that padded batch, `L_norm` defaulting to the longest sequence.
#[test]
fn parts_of_other_sequence_lengths_against_the_reference() {
    let vocab = 33u32;
    let a = LossCase::new(11, 3, 4, vocab);
    let b = LossCase::new(12, 2, 7, vocab);
    let s = 7usize;
    // the padded batch: a's sequences grown to 7 rows, then b's
    let (mut x, mut y, mut m, mut old, mut refp, mut adv) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut rows_of = Vec::new(); // padded row of each real row, in the parts' order
    for case in [&a, &b] {
        let rps = case.rows_per_seq as usize;
        for seq in 0..case.seqs as usize {
            for k in 0..s {
                if k < rps {
                    let r = seq * rps + k;
                    rows_of.push(y.len());
                    x.extend(case.logits[r * vocab as usize..(r + 1) * vocab as usize].iter());
                    y.push(case.targets[r]);
                    m.push(case.mask[r]);
                    old.push(case.old[r]);
                    refp.push(case.refp[r]);
                } else {
                    x.extend(std::iter::repeat_n(0.0f32, vocab as usize));
                    y.push(0);
                    m.push(0.0);
                    old.push(0.0);
                    refp.push(0.0);
                }
            }
            adv.push(case.adv_seq[seq]);
        }
    }
    let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let (xf, mf, advf, oldf, reff) = (f(&x), f(&m), f(&adv), f(&old), f(&refp));
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for agg in aggregations(20.0) {
                let cfg = config(mode, agg);
                let la = Logits::from_f32(DType::F32, &a.logits);
                let lb = Logits::from_f32(DType::F32, &b.logits);
                let batches = [part(&a, &la, (0, 3), false), part(&b, &lb, (0, 2), false)];
                let what = format!("{} {mode:?} {agg:?}", name(ctx));
                let got = ctx
                    .policy_loss_parts(&cfg, &batches, Some(DType::F32))
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let want = reference::policy_loss(
                    &cfg,
                    &reference::Batch {
                        logits: &xf,
                        vocab: vocab as usize,
                        rows_per_seq: s,
                        targets: &y,
                        mask: &mf,
                        advantages: &advf,
                        old_logp: Some(&oldf),
                        ref_logp: Some(&reff),
                    },
                )
                .unwrap();
                let tol = |w: f64| 2e-5 + 2e-5 * w.abs();
                close(got.metrics.loss, want.loss, tol(want.loss))
                    .unwrap_or_else(|e| panic!("{what}: loss: {e}"));
                close(got.metrics.kl, want.metrics.kl, tol(want.metrics.kl))
                    .unwrap_or_else(|e| panic!("{what}: kl: {e}"));
                let v = vocab as usize;
                // the reference's rows in the order of the parts' rows
                let mut want_grad = Vec::with_capacity(rows_of.len() * v);
                for (r, &p) in rows_of.iter().enumerate() {
                    close(got.logprobs[r], want.logp[p], 1e-4)
                        .unwrap_or_else(|e| panic!("{what}: logprobs[{r}]: {e}"));
                    want_grad.extend_from_slice(&want.grad[p * v..(p + 1) * v]);
                }
                let g = got.grad.unwrap();
                g.compare_logits_grad(&want_grad)
                    .unwrap_or_else(|e| panic!("{what}: grad {e} (vocab {v})"));
            }
        }
    }
}

/// Two parts in one buffer (a trainer's micro-batches in one page), each overwritten
/// by its gradient in place: the bits of one buffer's separate gradient; parts whose
/// written rows overlap another part's rows are an error naming the part.
#[test]
fn parts_sharing_a_buffer() {
    let case = LossCase::new(21, 4, 3, 300);
    let (rows, v) = (case.rows() as u32, case.vocab);
    let cfg = config(
        PolicyLossMode::PpoClip,
        (LossAggMode::SeqMeanTokenMean, None),
    );
    for ctx in contexts() {
        let whole = ctx
            .policy_loss(
                &cfg,
                &case.batch(wgpu_policy_loss::HostLogits::F32(&case.logits), ALL_INPUTS),
                Some(DType::F32),
            )
            .unwrap();
        let f32s = |v: &[f32]| ctx.upload("x", bytemuck::cast_slice(v));
        let x = f32s(&case.logits);
        let (y, m, a) = (
            ctx.upload("y", bytemuck::cast_slice(&case.targets)),
            f32s(&case.mask),
            f32s(&case.adv_seq),
        );
        let (old, refp) = (f32s(&case.old), f32s(&case.refp));
        // rows [0, 6) and [6, 12): sequences 0-1 and 2-3
        let inputs = |r0: u32, r1: u32| {
            let s = |r: u32| r / case.rows_per_seq;
            LossInputs::new(
                LogitsView::new(&x, DType::F32, r1 - r0, v)
                    .with_sequences(case.rows_per_seq, case.rows_per_seq as u64 * v as u64)
                    .with_byte_offset(r0 as u64 * v as u64 * 4)
                    .unwrap(),
                TargetsView::new(&y)
                    .with_byte_offset(r0 as u64 * 4)
                    .unwrap(),
                F32View::at(&m, r0 as u64 * 4),
                Advantages::PerSequence(F32View::at(&a, s(r0) as u64 * 4)),
            )
            .with_old_logprobs(F32View::at(&old, r0 as u64 * 4))
            .with_ref_logprobs(F32View::at(&refp, r0 as u64 * 4))
        };
        let out = LossBuffers::new(ctx, rows);
        let loss = PolicyLoss::new(ctx, cfg).unwrap();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let parts = [
            (inputs(0, 6), Gradient::InPlace),
            (inputs(6, 12), Gradient::InPlace),
        ];
        loss.record_parts(&mut enc, &parts, &out.outputs())
            .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
        let got = ctx
            .read_back(
                enc,
                &[
                    (&out.metrics, Metrics::LEN as u64 * 4),
                    (&x, rows as u64 * v as u64 * 4),
                ],
            )
            .unwrap();
        let metrics = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]));
        assert_eq!(
            metrics.loss.to_bits(),
            whole.metrics.loss.to_bits(),
            "{}",
            name(ctx)
        );
        let grad: Vec<f32> = bytemuck::pod_collect_to_vec(&got[1]);
        let want = whole.grad.as_ref().unwrap().to_f32();
        assert!(
            grad.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}: in-place parts differ from one buffer",
            name(ctx)
        );
        // part 1 starting a row early: part 0 writes over a row part 1 reads
        let bad = [
            (inputs(0, 6), Gradient::InPlace),
            (inputs(5, 11), Gradient::None),
        ];
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let e = loss
            .record_parts(&mut enc, &bad, &out.outputs())
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, Error::InvalidArgument { arg: "logits", .. })
                && msg.contains("part 0")
                && msg.contains("part 1"),
            "{msg}"
        );
    }
}

/// Bad parts are errors that name the argument and the part; a bad token id in a later
/// part names its row counted across parts.
#[test]
fn bad_parts_are_named() {
    let case = LossCase::new(31, 4, 3, 40);
    let ctx = &contexts()[0];
    let logits = Logits::from_f32(DType::F32, &case.logits);
    let cfg = LossConfig::default();
    let p0 = part(&case, &logits, (0, 2), false);
    let p1 = part(&case, &logits, (2, 4), false);
    // another vocabulary
    let other: Vec<f32> = case.logits[..6 * 20].to_vec();
    let mut wide = p1;
    wide.logits = wgpu_policy_loss::HostLogits::F32(&other);
    wide.vocab = 20;
    wide.targets = &[0; 6];
    let e = ctx.policy_loss_parts(&cfg, &[p0, wide], None).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { arg: "logits", reason } if reason.contains("part 1")),
        "{e}"
    );
    // old log-probs in one part only
    let mut on_policy = p1;
    on_policy.old_logprobs = None;
    let e = ctx
        .policy_loss_parts(&cfg, &[p0, on_policy], None)
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::InvalidArgument {
                arg: "old_logprobs",
                ..
            }
        ),
        "{e}"
    );
    // a short mask in part 1
    let mut short = p1;
    short.mask = &case.mask[6..10];
    let e = ctx.policy_loss_parts(&cfg, &[p0, short], None).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { arg: "mask", reason } if reason.contains("part 1")),
        "{e}"
    );
    // no part at all
    assert!(ctx.policy_loss_parts::<HostBatch>(&cfg, &[], None).is_err());
    // a masked-in id outside the vocabulary in part 1, row 2 of it: row 8 of the batch
    let mut ids = case.targets[6..12].to_vec();
    let mut mask = case.mask[6..12].to_vec();
    ids[2] = 40;
    mask[2] = 1.0;
    let mut bad = p1;
    bad.targets = &ids;
    bad.mask = &mask;
    let e = ctx.policy_loss_parts(&cfg, &[p0, bad], None).unwrap_err();
    assert!(
        matches!(e, Error::TargetOutOfRange { row: 8, id: 40, .. }),
        "{e}"
    );
}

/// Parts chunked by a small binding (1 MiB) and a 16 × 16 grid: still the bits of one
/// unchunked buffer.
#[test]
fn chunked_parts_have_the_bits_of_one_buffer() {
    let case = LossCase::new(41, 6, 60, 4099);
    let logits = Logits::from_f32(DType::Bf16, &case.logits);
    let cfg = config(PolicyLossMode::Gspo, (LossAggMode::SeqMeanTokenMean, None));
    for full in opened() {
        let a = full.adapter().unwrap();
        let small = wgpu_policy_loss::Context::from_adapter_with_limits(
            a,
            wgpu_policy_loss::wgpu::Limits {
                max_storage_buffer_binding_size: 1 << 20,
                max_compute_workgroups_per_dimension: 16,
                ..a.limits()
            },
        )
        .unwrap();
        let whole = full
            .policy_loss(
                &cfg,
                &part(&case, &logits, (0, 6), false),
                Some(DType::Bf16),
            )
            .unwrap();
        let (_, parts) = whole_and_parts(
            &small,
            &cfg,
            &case,
            &logits,
            &[1, 3],
            false,
            Some(DType::Bf16),
        );
        assert!(same_bits(&whole, &parts), "{}", name(&full));
    }
}
