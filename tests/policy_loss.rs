//! The policy loss and its gradient (shaders/policy_loss.wgsl and its helpers) on every
//! adapter, against the f64 reference: every mode × aggregation × KL estimator, each
//! (mode, aggregation) in every dtype, with and without temperature, entropy bonus and
//! dual-clip.

mod common;

use common::*;
use wgpu_policy_loss::{DType, KlEstimator, LossAggMode, LossConfig, PolicyLossMode};

fn cfg(mode: PolicyLossMode, agg: LossAggMode, kl: KlEstimator, extra: usize) -> LossConfig {
    let extras = [(1.0, 0.0, 0.0, None), (0.7, 0.2, 0.03, Some(3.0))][extra];
    loss_config(mode, agg, kl, extras)
}

#[test]
fn every_mode_aggregation_and_estimator() {
    let case = LossCase::new(1, 3, 5, 37);
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for agg in LossAggMode::ALL {
                for (k, kl) in KlEstimator::ALL.into_iter().enumerate() {
                    for extra in 0..2 {
                        let c = cfg(mode, agg, kl, extra);
                        let using = Use {
                            per_token_adv: extra == 1,
                            old: true,
                            refp: true,
                        };
                        // every (mode, aggregation) in every dtype, the estimators cycled
                        let dtype = DType::ALL[(2 * k + extra) % 3];
                        check_loss(ctx, &c, &case, dtype, Some(DType::F32), using);
                    }
                }
            }
        }
    }
}

#[test]
fn every_dtype_and_gradient_dtype() {
    // odd V: 16-bit gradient rows share words with their neighbours (and rows are read
    // one element at a time); V = 300: rows on 16-byte but not group boundaries (one at
    // a time, whole words); V = 304: rows on group boundaries, eight in 16-byte loads
    for vocab in [301, 300, 304] {
        every_dtype_and_gradient_dtype_at(vocab);
    }
}

fn every_dtype_and_gradient_dtype_at(vocab: u32) {
    let case = LossCase::new(2, 3, 4, vocab);
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for dtype in DType::ALL {
                for grad in DType::ALL {
                    let c = cfg(mode, LossAggMode::SeqMeanTokenMean, KlEstimator::K3, 1);
                    let using = ALL_INPUTS;
                    check_loss(ctx, &c, &case, dtype, Some(grad), using);
                }
            }
        }
    }
}

/// The row kernels' other lane layout on every adapter: strided lanes (what GPUs run)
/// on CPU adapters, contiguous blocks (what CPU adapters run) on GPUs, so that CI's
/// lavapipe checks the layout every GPU uses.
#[test]
fn the_other_lane_layout() {
    // one element at a time, and groups of eight in 16-byte loads (V = 4104)
    for vocab in [301, 4100, 4104] {
        let case = LossCase::new(3, 3, 4, vocab);
        for ctx in contexts() {
            let other = ctx.with_lane_blocks(!ctx.lane_blocks());
            for mode in PolicyLossMode::ALL {
                for dtype in DType::ALL {
                    let c = cfg(mode, LossAggMode::SeqMeanTokenMean, KlEstimator::K3, 1);
                    for grad in [dtype, DType::F32] {
                        check_loss(&other, &c, &case, dtype, Some(grad), ALL_INPUTS);
                    }
                }
            }
        }
    }
}

#[test]
fn on_policy_and_without_reference() {
    let case = LossCase::new(3, 2, 6, 129);
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for agg in LossAggMode::ALL {
                let c = cfg(mode, agg, KlEstimator::K1, 0);
                let using = Use {
                    per_token_adv: false,
                    old: false,
                    refp: false,
                };
                check_loss(ctx, &c, &case, DType::Bf16, Some(DType::F32), using);
            }
        }
    }
}

#[test]
fn global_normalizer_and_l_norm() {
    let case = LossCase::new(4, 3, 5, 64);
    for ctx in contexts() {
        let mut c = cfg(
            PolicyLossMode::PpoClip,
            LossAggMode::TokenMean,
            KlEstimator::K2,
            1,
        );
        c.global_normalizer = Some(123.0);
        let using = Use {
            per_token_adv: true,
            old: true,
            refp: true,
        };
        check_loss(ctx, &c, &case, DType::F16, Some(DType::F16), using);
        c.loss_agg_mode = LossAggMode::SeqMeanTokenSumNorm;
        c.l_norm = Some(4096.0);
        check_loss(ctx, &c, &case, DType::F32, Some(DType::Bf16), using);
    }
}

#[test]
fn forward_only_matches() {
    let case = LossCase::new(5, 3, 5, 1000);
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            let c = cfg(mode, LossAggMode::TokenMean, KlEstimator::K3, 1);
            let using = Use {
                per_token_adv: false,
                old: true,
                refp: true,
            };
            check_loss(ctx, &c, &case, DType::Bf16, None, using);
        }
    }
}

#[test]
fn large_vocabulary() {
    let case = LossCase::new(6, 2, 3, 151936);
    for ctx in contexts() {
        let c = cfg(
            PolicyLossMode::PpoClip,
            LossAggMode::SeqMeanTokenMean,
            KlEstimator::K3,
            1,
        );
        let using = Use {
            per_token_adv: false,
            old: true,
            refp: true,
        };
        check_loss(ctx, &c, &case, DType::Bf16, Some(DType::Bf16), using);
    }
}

use wgpu_policy_loss::reference;
use wgpu_policy_loss::reference::compare::{self, Format, Tolerance};
use wgpu_policy_loss::wgpu;
use wgpu_policy_loss::{
    Advantages, Context, F32View, GradView, Gradient, HostGrad, LogitsView, LossBuffers,
    LossInputs, Metrics, PolicyLoss, TargetsView,
};

/// Where the gradient goes when it shares the logits' buffer.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// Over the logits (`Gradient::InPlace`).
    Over,
    /// `[logits | gap | gradient]`, as a suballocating allocator (Burn's) hands out.
    After(u64),
    /// `[gradient | gap | logits]`.
    Before(u64),
}

impl Place {
    /// Whether rows of `vocab` elements stay on the grid of groups of eight they have in
    /// a buffer of their own (and so give the same bits).
    fn keeps_quads(self, vocab: u32) -> bool {
        match self {
            Place::Over => true,
            Place::After(gap) | Place::Before(gap) => {
                !vocab.is_multiple_of(8) || gap.is_multiple_of(8)
            }
        }
    }
}

/// Runs the recording API with the gradient in the logits' own buffer, and reads back
/// the metrics and the gradient.
fn run_one_buffer(
    ctx: &Context,
    c: &LossConfig,
    case: &LossCase,
    dtype: DType,
    place: Place,
) -> (Metrics, Vec<f32>) {
    let logits = Logits::from_f32(dtype, &case.logits);
    let rows = case.rows() as u32;
    let n = case.logits.len() as u64;
    let (x_at, g_at) = match place {
        Place::Over => (0, 0),
        Place::After(gap) => (0, n + gap),
        Place::Before(gap) => (n + gap, 0),
    };
    let elem = dtype.size();
    let total = (x_at.max(g_at) + n) * elem;
    let mut bytes = vec![0xA5u8; total.div_ceil(4) as usize * 4];
    let x_bytes = (x_at * elem) as usize;
    bytes[x_bytes..x_bytes + logits.bytes().len()].copy_from_slice(logits.bytes());
    let x = ctx.upload("logits", &bytes);
    let y = ctx.upload("targets", bytemuck::cast_slice(&case.targets));
    let m = ctx.upload("mask", bytemuck::cast_slice(&case.mask));
    let a = ctx.upload("adv", bytemuck::cast_slice(&case.adv_seq));
    let old = ctx.upload("old", bytemuck::cast_slice(&case.old));
    let rf = ctx.upload("ref", bytemuck::cast_slice(&case.refp));
    let out = LossBuffers::new(ctx, rows);
    let loss = PolicyLoss::new(ctx, *c).unwrap();
    let view = LogitsView::new(&x, dtype, rows, case.vocab)
        .with_sequences(case.rows_per_seq, (case.rows_per_seq * case.vocab) as u64);
    let inputs = LossInputs::new(
        view.with_byte_offset(x_at * elem).unwrap(),
        TargetsView::new(&y),
        F32View::new(&m),
        Advantages::PerSequence(F32View::new(&a)),
    )
    .with_old_logprobs(F32View::new(&old))
    .with_ref_logprobs(F32View::new(&rf));
    let gradient = match place {
        Place::Over => Gradient::InPlace,
        _ => {
            let mut g = GradView::like(&x, dtype, &view);
            g.layout.offset = g_at;
            Gradient::Into(g)
        }
    };
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    loss.record(&mut enc, &inputs, gradient, &out.outputs())
        .unwrap_or_else(|e| panic!("{} {place:?}: {e}", name(ctx)));
    let got = ctx
        .read_back(enc, &[(&out.metrics, Metrics::LEN as u64 * 4), (&x, total)])
        .unwrap();
    let metrics = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]));
    let g_bytes = (g_at * elem) as usize;
    let grad = HostGrad {
        dtype,
        bytes: got[1][g_bytes..g_bytes + (n * elem) as usize].to_vec(),
    }
    .to_f32();
    if !matches!(place, Place::Over) {
        // the logits themselves are left as they were
        assert_eq!(
            &got[1][x_bytes..x_bytes + logits.bytes().len()],
            logits.bytes(),
            "{} {dtype} {place:?}: the logits changed",
            name(ctx)
        );
    }
    (metrics, grad)
}

#[test]
fn gradient_in_the_logits_buffer_equals_separate_buffer() {
    // odd V so that 16-bit rows share words at their edges; V = 516 for whole words,
    // V = 520 for groups of eight in 16-byte loads and stores; an odd gap puts a 16-bit
    // gradient mid-word, next to a logit
    for vocab in [515, 516, 520] {
        in_one_buffer_equals_separate(vocab);
    }
}

fn in_one_buffer_equals_separate(vocab: u32) {
    let case = LossCase::new(7, 3, 4, vocab);
    let places = [
        Place::Over,
        Place::After(0),
        Place::After(1),
        Place::After(64),
        Place::Before(3),
        Place::Before(4),
    ];
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for dtype in DType::ALL {
                let c = cfg(mode, LossAggMode::SeqMeanTokenMean, KlEstimator::K3, 1);
                let logits = Logits::from_f32(dtype, &case.logits);
                let batch = case.batch(
                    logits.host(),
                    Use {
                        per_token_adv: false,
                        old: true,
                        refp: true,
                    },
                );
                let separate = ctx.policy_loss(&c, &batch, Some(dtype)).unwrap();
                let sep = separate.grad.unwrap().to_f32();
                for place in places {
                    let (metrics, grad) = run_one_buffer(ctx, &c, &case, dtype, place);
                    let what = format!("{} {dtype} {mode:?} {place:?}", name(ctx));
                    let (loss, want) = (metrics.loss, separate.metrics.loss);
                    if place.keeps_quads(vocab) {
                        assert_eq!(loss.to_bits(), want.to_bits(), "{what}");
                    } else {
                        assert!((loss - want).abs() <= 1e-5 * want.abs().max(1.0), "{what}");
                    }
                    // masked-out rows hold zeros, as in a separate buffer
                    if place.keeps_quads(vocab) {
                        for (i, (a, b)) in grad.iter().zip(&sep).enumerate() {
                            assert_eq!(a.to_bits(), b.to_bits(), "{what}: element {i}: {a} vs {b}");
                        }
                    } else {
                        // a gradient off the 16-byte grid takes the one-at-a-time path,
                        // whose sums round differently: two computations each within
                        // the library's rule of the exact gradient
                        let want: Vec<f64> = sep.iter().map(|&b| b as f64).collect();
                        let rule = Tolerance::logits_grad(dtype.into());
                        compare::within(&grad, &want, rule.plus(rule))
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                        for (i, (a, b)) in grad.iter().zip(&sep).enumerate() {
                            assert!(*b != 0.0 || *a == 0.0, "{what}: element {i}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }
}

/// The loss and gradient are bitwise reproducible, and native paths give the bits of
/// the fallback.
#[test]
fn bitwise_reproducible_across_runs_and_paths() {
    let case = LossCase::new(8, 4, 6, 2049);
    for ctx in contexts() {
        let fallback = ctx.with_paths(wgpu_policy_loss::Paths::FALLBACK);
        for dtype in DType::ALL {
            let logits = Logits::from_f32(dtype, &case.logits);
            let batch = case.batch(
                logits.host(),
                Use {
                    per_token_adv: true,
                    old: true,
                    refp: true,
                },
            );
            let c = cfg(
                PolicyLossMode::Gspo,
                LossAggMode::TokenMean,
                KlEstimator::K2,
                1,
            );
            let a = ctx.policy_loss(&c, &batch, Some(DType::Bf16)).unwrap();
            let b = ctx.policy_loss(&c, &batch, Some(DType::Bf16)).unwrap();
            let f = fallback.policy_loss(&c, &batch, Some(DType::Bf16)).unwrap();
            assert!(same_bits(&a, &b), "{} {dtype}: two runs differ", name(ctx));
            assert!(
                same_bits(&a, &f),
                "{} {dtype}: native path differs from fallback",
                name(ctx)
            );
        }
    }
}

#[test]
fn empty_batch_gives_zero_loss_and_gradient() {
    let mut case = LossCase::new(9, 2, 3, 77);
    case.mask.iter_mut().for_each(|m| *m = 0.0);
    // garbage everywhere the mask is 0: ids out of range, NaN logits
    case.targets.iter_mut().for_each(|t| *t = u32::MAX);
    case.logits[5] = f32::NAN;
    for ctx in contexts() {
        for agg in LossAggMode::ALL {
            let c = cfg(PolicyLossMode::PpoClip, agg, KlEstimator::K1, 1);
            let batch = case.batch(
                wgpu_policy_loss::HostLogits::F32(&case.logits),
                Use {
                    per_token_adv: false,
                    old: true,
                    refp: true,
                },
            );
            let got = ctx.policy_loss(&c, &batch, Some(DType::F32)).unwrap();
            let m = got.metrics;
            assert_eq!(m.loss, 0.0, "{} {agg:?}", name(ctx));
            for v in [
                m.pg_clipfrac,
                m.pg_clipfrac_lower,
                m.ppo_kl,
                m.kl,
                m.entropy_mean,
                m.nonfinite_rows,
            ] {
                assert_eq!(v, 0.0, "{} {agg:?}: {m:?}", name(ctx));
            }
            assert!(got.grad.unwrap().to_f32().iter().all(|&g| g == 0.0));
        }
    }
}

/// NaN / inf logits on a masked-in row: counted, confined to that row's gradient;
/// on a masked-out row: no effect at all.
#[test]
fn nonfinite_rows_are_counted_and_confined() {
    let case = LossCase::new(10, 2, 4, 33);
    let v = case.vocab as usize;
    let mut x = case.logits.clone();
    x[2 * v + 4] = f32::NAN; // row 2, masked in
    x[v + 1] = f32::INFINITY; // row 1, masked in
    x[3 * v] = f32::NAN; // row 3, masked out (i % 7 == 3)
    x[6 * v] = f32::NEG_INFINITY; // row 6, in the masked-out sequence 1
    x[6 * v + 1] = f32::NAN;
    assert_eq!(case.mask[..4], [1.0, 0.5, 1.0, 0.0]);
    assert!(case.mask[4..].iter().all(|&m| m == 0.0));
    for ctx in contexts() {
        let c = cfg(
            PolicyLossMode::Reinforce,
            LossAggMode::TokenMean,
            KlEstimator::K1,
            0,
        );
        let batch = case.batch(
            wgpu_policy_loss::HostLogits::F32(&x),
            Use {
                per_token_adv: false,
                old: false,
                refp: false,
            },
        );
        let got = ctx.policy_loss(&c, &batch, Some(DType::F32)).unwrap();
        assert_eq!(
            got.metrics.nonfinite_rows,
            2.0,
            "{}: {:?} {:?}",
            name(ctx),
            got.metrics,
            &got.entropy
        );
        assert!(
            got.metrics.loss.is_nan(),
            "{}: a NaN row must reach the loss",
            name(ctx)
        );
        let g = got.grad.unwrap().to_f32();
        for r in 0..case.rows() {
            let row = &g[r * v..(r + 1) * v];
            let finite = row.iter().all(|x| x.is_finite());
            assert_eq!(finite, r != 1 && r != 2, "{} row {r}", name(ctx));
        }
        // the rows without NaN get the same gradient as without the bad rows' values
        let clean = ctx
            .policy_loss(
                &c,
                &wgpu_policy_loss::HostBatch {
                    kept: None,
                    temperatures: None,
                    logits: wgpu_policy_loss::HostLogits::F32(&case.logits),
                    ..batch
                },
                Some(DType::F32),
            )
            .unwrap()
            .grad
            .unwrap()
            .to_f32();
        for r in [0usize, 3, 4, 5, 6, 7] {
            assert_eq!(
                &g[r * v..(r + 1) * v],
                &clean[r * v..(r + 1) * v],
                "{} row {r}",
                name(ctx)
            );
        }
    }
}

/// Full-sequence logits [B, S, V] with the seed's shift, the gradient into a buffer of
/// the same layout: positions outside the view are left alone.
#[test]
fn shifted_view_with_gradient_like_logits() {
    let (b, s, v) = (2u32, 6u32, 97u32);
    let x = random_logits(12, (b * s * v) as usize, 2.0);
    let ids = random_targets(12, (b * s) as usize, v);
    let rows = (b * (s - 1)) as usize;
    let mask = vec![1.0f32; rows];
    let adv = [0.7f32, -0.4];
    for ctx in contexts() {
        let c = LossConfig {
            mode: PolicyLossMode::Reinforce,
            loss_agg_mode: LossAggMode::SeqMeanTokenMean,
            ..LossConfig::default()
        };
        let xb = ctx.upload("x", bytemuck::cast_slice(&x));
        let yb = ctx.upload("y", bytemuck::cast_slice(&ids));
        let mb = ctx.upload("m", bytemuck::cast_slice(&mask));
        let ab = ctx.upload("a", bytemuck::cast_slice(&adv));
        let sentinel = vec![7.0f32; x.len()];
        let gb = ctx.upload("g", bytemuck::cast_slice(&sentinel));
        let logits = LogitsView::shifted(&xb, DType::F32, b, s, v);
        let inputs = LossInputs::new(
            logits,
            TargetsView::shifted(&yb, s),
            F32View::new(&mb),
            Advantages::PerSequence(F32View::new(&ab)),
        );
        let (metrics, got) = record_and_read(
            ctx,
            c,
            &inputs,
            Gradient::Into(GradView::like(&gb, DType::F32, &logits)),
            &[(&gb, x.len() as u64 * 4)],
        );
        let g: Vec<f32> = bytemuck::pod_collect_to_vec(&got[0]);

        // the reference on the rows gathered by hand
        let mut xr = Vec::new();
        let mut t = Vec::new();
        for bi in 0..b as usize {
            for p in 0..(s - 1) as usize {
                let start = (bi * s as usize + p) * v as usize;
                xr.extend(x[start..start + v as usize].iter().map(|&z| z as f64));
                t.push(ids[bi * s as usize + p + 1]);
            }
        }
        let want = reference::policy_loss(
            &c,
            &reference::Batch {
                logits: &xr,
                vocab: v as usize,
                rows_per_seq: (s - 1) as usize,
                targets: &t,
                mask: &[1.0; 10],
                advantages: &[0.7, -0.4],
                old_logp: None,
                ref_logp: None,
            },
        )
        .unwrap();
        close(metrics.loss, want.loss, 1e-5).unwrap();
        let mut written = Vec::new();
        for bi in 0..b as usize {
            for p in 0..s as usize {
                let start = (bi * s as usize + p) * v as usize;
                let row = &g[start..start + v as usize];
                if p == s as usize - 1 {
                    assert!(
                        row.iter().all(|&z| z == 7.0),
                        "last position must be untouched"
                    );
                } else {
                    written.extend_from_slice(row);
                }
            }
        }
        compare::logits_grad(&written, &want.grad, Format::F32)
            .unwrap_or_else(|e| panic!("{}: grad {e} (vocab {v})", name(ctx)));
    }
}

/// Prints max |GPU − reference| of the loss and the gradient's largest error as a share
/// of its bound (`reference::compare`) per adapter, path and dtype, over every mode (run
/// with --nocapture). Each case also passes the
/// tolerances of `check_loss`.
#[test]
fn max_error_report() {
    let case = LossCase::new(20, 4, 8, 4099);
    for ctx in contexts() {
        for dtype in DType::ALL {
            for grad in DType::ALL {
                let (mut loss_err, mut grad_err) = (0.0f64, 0.0f64);
                for mode in PolicyLossMode::ALL {
                    let c = cfg(mode, LossAggMode::SeqMeanTokenMean, KlEstimator::K3, 1);
                    let using = ALL_INPUTS;
                    let (l, g) = check_loss(ctx, &c, &case, dtype, Some(grad), using);
                    loss_err = compare::max_err(loss_err, l);
                    grad_err = compare::max_err(grad_err, g);
                }
                println!(
                    "max err  {:<52} logits {:<5} grad {:<5} loss {:.1e}  grad/bound {:.2}",
                    name(ctx),
                    dtype,
                    grad,
                    loss_err,
                    grad_err
                );
            }
        }
    }
}

/// Rows padded to a multiple of four elements (V = 301..303 in rows of 304): the
/// four-at-a-time path with a partial last quad, for the logits and an f32 gradient of
/// the same layout, against the reference.
#[test]
fn padded_rows_read_four_at_a_time() {
    // the last quad of a row holds 1, 2 or 3 of its elements
    for vocab in [301, 302, 303] {
        padded_rows(vocab);
    }
}

fn padded_rows(vocab: u32) {
    let (rows, stride) = (9u32, 304u64);
    let dense = random_logits(40, (rows * vocab) as usize, 2.0);
    let mut padded = vec![f32::NAN; (rows as u64 * stride) as usize];
    for r in 0..rows as usize {
        padded[r * stride as usize..r * stride as usize + vocab as usize]
            .copy_from_slice(&dense[r * vocab as usize..(r + 1) * vocab as usize]);
    }
    let targets = random_targets(40, rows as usize, vocab);
    let mask = vec![1.0f32; rows as usize];
    let adv: Vec<f32> = (0..rows).map(|r| r as f32 / 4.0 - 1.0).collect();
    let c = LossConfig {
        mode: PolicyLossMode::Reinforce,
        entropy_coeff: 0.05,
        ..LossConfig::default()
    };
    for ctx in contexts() {
        let x = ctx.upload("x", bytemuck::cast_slice(&padded));
        let y = ctx.upload("y", bytemuck::cast_slice(&targets));
        let m = ctx.upload("m", bytemuck::cast_slice(&mask));
        let a = ctx.upload("a", bytemuck::cast_slice(&adv));
        let g = ctx.upload("g", bytemuck::cast_slice(&vec![7.0f32; padded.len()]));
        let logits = LogitsView::new(&x, DType::F32, rows, vocab).with_row_stride(stride);
        let inputs = LossInputs::new(
            logits,
            TargetsView::new(&y),
            F32View::new(&m),
            Advantages::PerToken(F32View::new(&a)),
        );
        let (metrics, got) = record_and_read(
            ctx,
            c,
            &inputs,
            Gradient::Into(GradView::like(&g, DType::F32, &logits)),
            &[(&g, padded.len() as u64 * 4)],
        );
        let grad: Vec<f32> = bytemuck::pod_collect_to_vec(&got[0]);
        let f = |v: &[f32]| v.iter().map(|&z| z as f64).collect::<Vec<_>>();
        let want = reference::policy_loss(
            &c,
            &reference::Batch {
                logits: &f(&dense),
                vocab: vocab as usize,
                rows_per_seq: rows as usize,
                targets: &targets,
                mask: &f(&mask),
                advantages: &f(&adv),
                old_logp: None,
                ref_logp: None,
            },
        )
        .unwrap();
        close(metrics.loss, want.loss, 1e-5).unwrap_or_else(|e| panic!("{}: loss {e}", name(ctx)));
        let mut dense_grad = Vec::new();
        for r in 0..rows as usize {
            for j in 0..stride as usize {
                let got = grad[r * stride as usize + j];
                if j < vocab as usize {
                    dense_grad.push(got);
                } else {
                    assert_eq!(got, 7.0, "{}: padding [{r},{j}] was written", name(ctx));
                }
            }
        }
        compare::logits_grad(&dense_grad, &want.grad, Format::F32)
            .unwrap_or_else(|e| panic!("{}: grad {e} (vocab {vocab})", name(ctx)));
    }
}
