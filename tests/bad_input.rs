//! Every kind of bad input gives a clear `Err` naming the argument, never a panic and
//! never a silently wrong number.

mod common;

use common::*;
use wgpu_policy_loss::wgpu;
use wgpu_policy_loss::{
    Advantages, Context, DType, Error, F32View, GradView, Gradient, HostBatch, HostLogits,
    LogitsView, LossBuffers, LossConfig, LossInputs, Metrics, PolicyLoss, TargetsView,
};

/// A small valid batch on the device, to break one piece at a time.
struct Dev {
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    m: wgpu::Buffer,
    a: wgpu::Buffer,
    out: LossBuffers,
}

const ROWS: u32 = 6;
const V: u32 = 10;

fn dev(ctx: &Context, ids: &[u32]) -> Dev {
    Dev {
        x: ctx.upload(
            "x",
            bytemuck::cast_slice(&random_logits(1, (ROWS * V) as usize, 1.0)),
        ),
        y: ctx.upload("y", bytemuck::cast_slice(ids)),
        m: ctx.upload(
            "m",
            bytemuck::cast_slice(&[1.0f32, 1.0, 0.0, 1.0, 1.0, 1.0]),
        ),
        a: ctx.upload("a", bytemuck::cast_slice(&[0.5f32])),
        out: LossBuffers::new(ctx, ROWS),
    }
}

fn inputs(d: &Dev) -> LossInputs<'_> {
    LossInputs::new(
        LogitsView::new(&d.x, DType::F32, ROWS, V),
        TargetsView::new(&d.y),
        F32View::new(&d.m),
        Advantages::PerSequence(F32View::new(&d.a)),
    )
}

fn record(
    ctx: &Context,
    cfg: LossConfig,
    inp: &LossInputs<'_>,
    grad: Gradient<'_>,
    out: &LossBuffers,
) -> wgpu_policy_loss::Result<Metrics> {
    let loss = PolicyLoss::new(ctx, cfg)?;
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    loss.record(&mut enc, inp, grad, &out.outputs())?;
    let got = ctx.read_back(enc, &[(&out.metrics, Metrics::LEN as u64 * 4)])?;
    Ok(Metrics::from_slice(
        &bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]),
    ))
}

fn assert_arg(r: wgpu_policy_loss::Result<impl std::fmt::Debug>, arg: &str) -> String {
    let e = r.expect_err("bad input was accepted");
    let msg = e.to_string();
    assert!(msg.contains(arg), "error does not name `{arg}`: {msg}");
    println!("bad input -> {msg}");
    msg
}

#[test]
fn target_out_of_range_is_found_on_the_device() {
    // row 2 is masked out: its garbage id is allowed; row 4 is the first bad one
    let ids = [1, 2, 999, 3, 10, 11];
    for ctx in contexts() {
        let d = dev(ctx, &ids);
        // the recording API: the metrics carry the first bad row, checked later
        let m = record(
            ctx,
            LossConfig::default(),
            &inputs(&d),
            Gradient::None,
            &d.out,
        )
        .unwrap();
        assert_eq!(m.invalid_target, Some((4, 10)), "{}", name(ctx));
        assert!(
            m.loss.is_nan(),
            "{}: a bad id must not give a plausible loss",
            name(ctx)
        );
        let e = m.check(V).unwrap_err();
        println!("bad input -> {e}");
        assert!(
            matches!(
                e,
                Error::TargetOutOfRange {
                    row: 4,
                    id: 10,
                    vocab: V
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("targets") && e.to_string().contains("row 4"));
        // the convenience API reads back and validates by default
        let x = random_logits(1, (ROWS * V) as usize, 1.0);
        let r = ctx.policy_loss(
            &LossConfig::default(),
            &HostBatch {
                kept: None,
                temperatures: None,
                logits: HostLogits::F32(&x),
                vocab: V,
                rows_per_seq: None,
                targets: &ids,
                mask: &[1.0, 1.0, 0.0, 1.0, 1.0, 1.0],
                advantages: &[0.5],
                old_logprobs: None,
                ref_logprobs: None,
            },
            Some(DType::F32),
        );
        assert!(
            matches!(r, Err(Error::TargetOutOfRange { row: 4, .. })),
            "{r:?}"
        );
        // and the same ids are fine where every bad row is masked out
        let d = dev(ctx, &[1, 2, 999, 3, 4, 5]);
        let m = record(
            ctx,
            LossConfig::default(),
            &inputs(&d),
            Gradient::None,
            &d.out,
        )
        .unwrap();
        assert_eq!(m.invalid_target, None);
        assert!(m.loss.is_finite());
    }
}

#[test]
fn shapes_and_lengths_that_do_not_match() {
    for ctx in contexts() {
        let d = dev(ctx, &[1; 6]);
        // 7 rows of logits in a buffer of 6
        let mut inp = inputs(&d);
        inp.logits = LogitsView::new(&d.x, DType::F32, ROWS + 1, V);
        assert_arg(
            record(ctx, LossConfig::default(), &inp, Gradient::None, &d.out),
            "logits",
        );
        // per-token advantages from a buffer of one value
        let mut inp = inputs(&d);
        inp.advantages = Advantages::PerToken(F32View::new(&d.a));
        assert_arg(
            record(ctx, LossConfig::default(), &inp, Gradient::None, &d.out),
            "advantages",
        );
        // old log-probs too short
        let mut inp = inputs(&d);
        inp.old_logprobs = Some(F32View::new(&d.a));
        assert_arg(
            record(ctx, LossConfig::default(), &inp, Gradient::None, &d.out),
            "old_logprobs",
        );
        // a row stride below V
        let mut inp = inputs(&d);
        inp.logits = LogitsView::new(&d.x, DType::F32, ROWS, V).with_row_stride(5);
        assert_arg(
            record(ctx, LossConfig::default(), &inp, Gradient::None, &d.out),
            "logits",
        );
        // rows that do not split into sequences
        let mut inp = inputs(&d);
        inp.logits = LogitsView::new(&d.x, DType::F32, ROWS, V).with_sequences(4, 40);
        assert_arg(
            record(ctx, LossConfig::default(), &inp, Gradient::None, &d.out),
            "logits",
        );
        // a byte offset that is not a multiple of the element size
        assert_arg(
            LogitsView::new(&d.x, DType::F32, 1, V).with_byte_offset(6),
            "logits",
        );
        // host API: lengths
        let x = vec![0.0f32; 60];
        let batch = HostBatch {
            kept: None,
            temperatures: None,
            logits: HostLogits::F32(&x),
            vocab: V,
            rows_per_seq: None,
            targets: &[1; 6],
            mask: &[1.0; 5],
            advantages: &[1.0],
            old_logprobs: None,
            ref_logprobs: None,
        };
        assert_arg(
            ctx.policy_loss(&LossConfig::default(), &batch, None),
            "mask",
        );
        let batch = HostBatch {
            kept: None,
            temperatures: None,
            mask: &[1.0; 6],
            advantages: &[1.0, 2.0],
            ..batch
        };
        assert_arg(
            ctx.policy_loss(&LossConfig::default(), &batch, None),
            "advantages",
        );
        let batch = HostBatch {
            kept: None,
            temperatures: None,
            advantages: &[1.0],
            vocab: 7,
            ..batch
        };
        assert_arg(
            ctx.policy_loss(&LossConfig::default(), &batch, None),
            "logits",
        );
    }
}

#[test]
fn buffers_too_small_or_without_storage_usage() {
    for ctx in contexts() {
        let d = dev(ctx, &[1; 6]);
        // the gradient buffer is too small
        let small = ctx.upload("g", &[0u8; 64]);
        let inp = inputs(&d);
        assert_arg(
            record(
                ctx,
                LossConfig::default(),
                &inp,
                Gradient::Into(GradView::new(&small, DType::F32, V)),
                &d.out,
            ),
            "gradient",
        );
        // outputs too small
        let tiny = LossBuffers::new(ctx, 1);
        assert_arg(
            record(ctx, LossConfig::default(), &inp, Gradient::None, &tiny),
            "outputs.logprobs",
        );
        // a logits buffer without STORAGE usage
        let no_storage = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (ROWS * V * 4) as u64,
            usage: wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut inp = inputs(&d);
        inp.logits = LogitsView::new(&no_storage, DType::F32, ROWS, V);
        let msg = assert_arg(
            record(ctx, LossConfig::default(), &inp, Gradient::None, &d.out),
            "logits",
        );
        assert!(msg.contains("STORAGE"), "{msg}");
        // the gradient over the logits themselves must say InPlace
        let inp = inputs(&d);
        let msg = assert_arg(
            record(
                ctx,
                LossConfig::default(),
                &inp,
                Gradient::Into(GradView::new(&d.x, DType::F32, V)),
                &d.out,
            ),
            "gradient",
        );
        assert!(msg.contains("InPlace"), "{msg}");
        // beside the logits in their buffer: allowed, but not overlapping them, and only
        // in their dtype
        let n = (ROWS * V) as u64;
        let both = ctx.upload("logits and gradient", &vec![0u8; 2 * n as usize * 4]);
        let mut inp = inputs(&d);
        inp.logits = LogitsView::new(&both, DType::F32, ROWS, V);
        let at = |offset: u64, dtype| {
            let mut g = GradView::new(&both, dtype, V);
            g.layout.offset = offset;
            Gradient::Into(g)
        };
        let cfg = LossConfig::default();
        assert!(record(ctx, cfg, &inp, at(n, DType::F32), &d.out).is_ok());
        let msg = assert_arg(
            record(ctx, cfg, &inp, at(n - 1, DType::F32), &d.out),
            "gradient",
        );
        assert!(msg.contains("overlaps the logits"), "{msg}");
        let msg = assert_arg(
            record(ctx, cfg, &inp, at(2 * n, DType::F16), &d.out),
            "gradient",
        );
        assert!(msg.contains("dtype"), "{msg}");
    }
}

#[test]
fn bad_configuration_values() {
    let ctx = &contexts()[0];
    let with = |f: fn(&mut LossConfig)| {
        let mut c = LossConfig::default();
        f(&mut c);
        c
    };
    let bad = [
        (with(|c| c.temperature = 0.0), "temperature"),
        (with(|c| c.temperature = -1.0), "temperature"),
        (with(|c| c.temperature = f32::NAN), "temperature"),
        (with(|c| c.temperature = f32::INFINITY), "temperature"),
        (
            with(|c| c.global_normalizer = Some(0.0)),
            "global_normalizer",
        ),
        (
            with(|c| c.global_normalizer = Some(-3.0)),
            "global_normalizer",
        ),
        (with(|c| c.clip_ratio_c = Some(1.0)), "clip_ratio_c"),
        (with(|c| c.clip_ratio_low = -0.1), "clip_ratio_low"),
        (with(|c| c.l_norm = Some(0.0)), "l_norm"),
        (with(|c| c.kl_coef = f32::NAN), "kl_coef"),
    ];
    for (cfg, arg) in bad {
        assert_arg(PolicyLoss::new(ctx, cfg), arg);
    }
    // the KL term without reference log-probs
    let d = dev(ctx, &[1; 6]);
    let cfg = LossConfig {
        kl_coef: 0.1,
        ..LossConfig::default()
    };
    assert_arg(
        record(ctx, cfg, &inputs(&d), Gradient::None, &d.out),
        "ref_logprobs",
    );
    // row_stats too
    let x = vec![0.0f32; 20];
    for tau in [0.0f32, -2.0, f32::NAN] {
        assert_arg(
            ctx.row_stats(HostLogits::F32(&x), 10, &[0, 1], tau),
            "temperature",
        );
    }
}

#[test]
fn outputs_sharing_an_input_buffer_are_rejected() {
    for ctx in contexts() {
        // ids in a buffer large enough to also hold the metrics
        let d = dev(ctx, &[1; 16]);
        let loss = PolicyLoss::new(ctx, LossConfig::default()).unwrap();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let r = loss.record(
            &mut enc,
            &inputs(&d),
            Gradient::None,
            &wgpu_policy_loss::LossOutputs {
                metrics: F32View::new(&d.y),
                logprobs: None,
                entropy: None,
                lse: None,
            },
        );
        assert_arg(r, "outputs.metrics");
        // the gradient over the mask
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let big_mask = ctx.upload("m", &vec![0u8; (ROWS * V * 4) as usize]);
        let mut inp = inputs(&d);
        inp.mask = F32View::new(&big_mask);
        let r = loss.record(
            &mut enc,
            &inp,
            Gradient::Into(GradView::new(&big_mask, DType::F32, V)),
            &d.out.outputs(),
        );
        assert_arg(r, "gradient");
    }
}

/// A buffer of another device: wgpu's validation error, caught by an error scope.
#[test]
fn wgpu_validation_errors_become_err() {
    let ctx = opened().remove(0);
    let other = Context::from_adapter(ctx.adapter().unwrap()).unwrap();
    let d = dev(&ctx, &[1; 6]);
    let foreign = other.upload("y", bytemuck::cast_slice(&[1u32; 6]));
    let mut inp = inputs(&d);
    inp.targets = TargetsView::new(&foreign);
    let loss = PolicyLoss::new(&ctx, LossConfig::default()).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let e = loss
        .record(&mut enc, &inp, Gradient::None, &d.out.outputs())
        .unwrap_err();
    assert!(matches!(e, Error::Wgpu(_)), "{e}");
    println!("bad input -> {}", e.to_string().replace('\n', " "));
}

#[test]
fn a_lost_device_is_an_err() {
    // a device of its own, destroyed below
    let ctx = opened().remove(0);
    let x = vec![0.5f32; 20];
    assert!(ctx.row_stats(HostLogits::F32(&x), 10, &[0, 1], 1.0).is_ok());
    ctx.device().destroy();
    let r = ctx.row_stats(HostLogits::F32(&x), 10, &[0, 1], 1.0);
    let e = r.expect_err("a destroyed device gave a result");
    println!("bad input -> {}", e.to_string().replace('\n', " "));
    assert!(matches!(e, Error::Wgpu(_)), "{e}");
    // and every later call too
    let e = ctx
        .row_stats(HostLogits::F32(&x), 10, &[0, 1], 1.0)
        .unwrap_err();
    println!("bad input -> then {}", e.to_string().replace('\n', " "));
}
