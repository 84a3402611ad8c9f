//! The fused linear head against the f64 reference on every adapter: the loss, its
//! metrics, per-row log-probs and entropies, ∂L/∂h and ∂L/∂W, from hidden states and
//! the lm-head weight in every dtype, with chunks that do not divide the rows. The
//! harness is tests/common/head.rs; `eval` and `bench --head` are tests/head_eval.rs.

mod common;

use common::head::*;
use common::*;
use wgpu_policy_loss::{Context, DType, HostHead, KlEstimator, LossAggMode, PolicyLossMode};

#[test]
fn head_matches_the_reference_in_every_dtype() {
    for ctx in contexts() {
        for dtype in DType::ALL {
            let hc = HeadCase::new(11, (3, 13, 301, 40), dtype);
            for grad in DType::ALL {
                check_head(ctx, &ppo(), &hc, Some(grad), Some(7), (ALL_INPUTS, false));
            }
        }
    }
}

/// Every mode in the 16-bit dtypes too (f16 and bf16 hidden states and weight, a
/// 16-bit gradient of each), the two-pass modes among them, with a chunk that does not
/// divide the rows.
#[test]
fn head_matches_the_reference_in_every_mode_in_16_bit() {
    for dtype in [DType::F16, DType::Bf16] {
        let hc = HeadCase::new(22, (3, 10, 157, 20), dtype);
        for ctx in contexts() {
            for mode in PolicyLossMode::ALL {
                let agg = LossAggMode::SeqMeanTokenMean;
                let mut cfg = loss_config(mode, agg, KlEstimator::K3, (1.0, 0.1, 0.02, None));
                cfg.clip_cov_ratio = 0.2;
                cfg.kl_cov_ratio = 0.2;
                check_head(ctx, &cfg, &hc, Some(dtype), Some(7), (ALL_INPUTS, false));
            }
        }
    }
}

/// Every mode and aggregation, with the options that make the head run its statistics
/// pass first (GSPO, the covariance selection, the entropy mask, the rollout
/// correction without old log-probs) and those that do not.
#[test]
fn head_matches_the_reference_in_every_mode_and_aggregation() {
    let hc = HeadCase::new(21, (3, 10, 157, 20), DType::F32);
    for ctx in contexts() {
        for mode in PolicyLossMode::ALL {
            for (agg, global) in aggregations(17.0) {
                let mut cfg = loss_config(mode, agg, KlEstimator::K2, (0.9, 0.1, 0.02, None));
                cfg.global_normalizer = global;
                cfg.clip_cov_ratio = 0.2;
                cfg.kl_cov_ratio = 0.2;
                check_head(
                    ctx,
                    &cfg,
                    &hc,
                    Some(DType::F32),
                    Some(8),
                    (ALL_INPUTS, false),
                );
            }
        }
        let mut entropy = ppo();
        entropy.top_entropy_quantile = Some(0.3);
        entropy.top_entropy_renormalize = true;
        check_head(
            ctx,
            &entropy,
            &hc,
            Some(DType::F32),
            Some(6),
            (ALL_INPUTS, false),
        );
        let mut rollout = ppo();
        rollout.rollout_correction = Some(wgpu_policy_loss::RolloutCorrection::new(
            wgpu_policy_loss::RolloutLevel::Sequence,
            wgpu_policy_loss::RolloutMode::Truncate,
        ));
        let on_policy = Use {
            old: false,
            ..ALL_INPUTS
        };
        check_head(
            ctx,
            &rollout,
            &hc,
            Some(DType::F32),
            Some(11),
            (on_policy, true),
        );
        check_head(ctx, &ppo(), &hc, None, Some(4), (ALL_INPUTS, false));
        // one chunk: the statistics pass leaves its logits for the gradient pass
        let gspo = loss_config(
            PolicyLossMode::Gspo,
            LossAggMode::SeqMeanTokenMean,
            KlEstimator::K3,
            (1.0, 0.0, 0.0, None),
        );
        check_head(
            ctx,
            &gspo,
            &hc,
            Some(DType::Bf16),
            None,
            (ALL_INPUTS, false),
        );
    }
}

/// A device whose largest buffer (1 MiB) cannot hold the batch's f32 logits (3.6 MB)
/// and whose bindings (256 KiB) hold neither W (480 KB) nor 22 rows of logits: the
/// head runs in chunks of 21 rows and two vocabulary blocks of W, and is right.
#[test]
fn head_runs_where_the_logits_exceed_the_largest_buffer() {
    for full in opened() {
        let a = full.adapter().expect("opened on an adapter");
        let limits = wgpu_policy_loss::wgpu::Limits {
            max_storage_buffer_binding_size: 256 << 10,
            max_buffer_size: 1 << 20,
            ..a.limits()
        };
        let small = Context::from_adapter_with_limits(a, limits).unwrap();
        let hc = HeadCase::new(61, (2, 150, 3000, 40), DType::F32);
        let logits_bytes = 300u64 * 3000 * 4;
        assert!(logits_bytes > small.device().limits().max_buffer_size);
        // ∂L/∂W rounded into bf16 a vocabulary block at a time; then f32 in place
        check_head(
            &small,
            &ppo(),
            &hc,
            Some(DType::Bf16),
            None,
            (ALL_INPUTS, false),
        );
        let gspo = loss_config(
            PolicyLossMode::Gspo,
            LossAggMode::TokenMean,
            KlEstimator::K3,
            (1.0, 0.0, 0.0, None),
        );
        check_head(
            &small,
            &gspo,
            &hc,
            Some(DType::F32),
            Some(3),
            (ALL_INPUTS, false),
        );
    }
}

/// The chunk changes nothing but ∂L/∂W's f32 sum over chunks; the same call twice has
/// the same bits.
#[test]
fn head_is_chunk_invariant_and_reproducible() {
    let hc = HeadCase::new(31, (2, 20, 129, 16), DType::Bf16);
    for ctx in contexts() {
        let run = |chunk| {
            check_head(
                ctx,
                &ppo(),
                &hc,
                Some(DType::F32),
                chunk,
                (ALL_INPUTS, false),
            )
        };
        let (a, b, whole) = (run(Some(7)), run(Some(7)), run(None));
        let same = same_bits(&a.loss, &b.loss)
            && a.grad_hidden == b.grad_hidden
            && a.grad_lm_head == b.grad_lm_head;
        assert!(same, "{}: two runs differ", name(ctx));
        assert!(
            same_bits(&a.loss, &whole.loss),
            "{}: the chunk changed the loss",
            name(ctx)
        );
        assert!(
            a.grad_hidden == whole.grad_hidden,
            "{}: the chunk changed grad_hidden",
            name(ctx)
        );
    }
}

/// Masked-out rows with NaN hidden states reach nothing; a non-finite hidden row on a
/// masked-in row is counted; an empty batch gives 0 and zero gradients.
#[test]
fn head_keeps_masked_rows_out_and_counts_nonfinite_ones() {
    for ctx in natives() {
        let mut hc = HeadCase::new(41, (2, 8, 64, 12), DType::F32);
        let h = hc.h as usize;
        let out_row = (0..hc.case.rows())
            .find(|&r| hc.case.mask[r] == 0.0)
            .unwrap();
        let in_row = (0..hc.case.rows())
            .find(|&r| hc.case.mask[r] == 1.0)
            .unwrap();
        hc.hidden.f32[out_row * h + 3] = f32::NAN;
        let got = check_head(
            ctx,
            &ppo(),
            &hc,
            Some(DType::F32),
            Some(5),
            (ALL_INPUTS, false),
        );
        let gw = got.grad_lm_head.unwrap().to_f32();
        assert!(
            gw.iter().all(|v| v.is_finite()),
            "{}: a masked-out NaN reached grad_lm_head",
            name(ctx)
        );
        hc.hidden.f32[in_row * h + 1] = f32::INFINITY;
        let got = ctx
            .policy_loss_head(
                &ppo(),
                &hc.host(ALL_INPUTS, false, Some(5)),
                Some(DType::F32),
            )
            .unwrap();
        assert_eq!(got.loss.metrics.nonfinite_rows, 1.0, "{}", name(ctx));
        // a NaN in one row of W makes every row's logits non-finite: every masked-in
        // row is counted, and the masked-out rows' ∂L/∂h is still exactly 0
        let mut bad_w = HeadCase::new(43, (2, 8, 64, 12), DType::F32);
        bad_w.lm_head.f32[5 * h + 2] = f32::NAN;
        let got = ctx
            .policy_loss_head(
                &ppo(),
                &bad_w.host(ALL_INPUTS, false, Some(5)),
                Some(DType::F32),
            )
            .unwrap();
        let masked_in = bad_w.case.mask.iter().filter(|&&m| m > 0.0).count();
        assert_eq!(
            got.loss.metrics.nonfinite_rows,
            masked_in as f32,
            "{}: a NaN in lm_head",
            name(ctx)
        );
        let gh = got.grad_hidden.unwrap().to_f32();
        for r in (0..bad_w.case.rows()).filter(|&r| bad_w.case.mask[r] == 0.0) {
            assert!(
                gh[r * h..(r + 1) * h].iter().all(|&v| v == 0.0),
                "{}: masked-out row {r} of grad_hidden with a NaN lm_head",
                name(ctx)
            );
        }
        let mut empty = HeadCase::new(42, (2, 8, 64, 12), DType::F32);
        empty.case.mask.iter_mut().for_each(|m| *m = 0.0);
        let got = ctx
            .policy_loss_head(
                &ppo(),
                &empty.host(ALL_INPUTS, false, Some(5)),
                Some(DType::Bf16),
            )
            .unwrap();
        assert_eq!(got.loss.metrics.loss, 0.0);
        for g in [got.grad_hidden.unwrap(), got.grad_lm_head.unwrap()] {
            assert!(
                g.bytes.iter().all(|&b| b == 0),
                "{}: an empty batch has a gradient",
                name(ctx)
            );
        }
    }
}

/// Bad views are errors naming the argument.
#[test]
fn head_names_bad_arguments() {
    let ctx = &contexts()[0];
    let hc = HeadCase::new(51, (1, 6, 40, 8), DType::F32);
    let mut b = hc.host(ALL_INPUTS, false, Some(0));
    let err = ctx
        .policy_loss_head(&ppo(), &b, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("chunk_rows"), "{err}");
    b.chunk_rows = None;
    b.hidden_dim = 7;
    let err = ctx
        .policy_loss_head(&ppo(), &b, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("hidden") || err.contains("lm_head"), "{err}");
    let f16 = Logits::from_f32(DType::F16, &hc.lm_head.f32);
    let mixed = HostHead {
        kept: None,
        temperatures: None,
        lm_head: f16.host(),
        ..hc.host(ALL_INPUTS, false, None)
    };
    let err = ctx
        .policy_loss_head(&ppo(), &mixed, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lm_head"), "{err}");
    let mut ids = hc.case.targets.clone();
    let row = (0..ids.len()).find(|&r| hc.case.mask[r] > 0.0).unwrap();
    ids[row] = 40;
    let bad = HostHead {
        kept: None,
        temperatures: None,
        targets: &ids,
        ..hc.host(ALL_INPUTS, false, None)
    };
    let err = ctx
        .policy_loss_head(&ppo(), &bad, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("row {row}")) && err.contains("40"),
        "{err}"
    );
}

/// Strided views through the device API: the response slice of `[B, S, H]` hidden
/// states (prompt rows skipped, sequences apart), and ∂L/∂h into a padded buffer at a
/// byte offset, give the bits of the dense host call on the same rows.
#[test]
fn head_reads_strided_views_and_writes_strided_gradients() {
    use wgpu_policy_loss::{
        F32View, HeadGradients, LogitsView, LossBuffers, MatrixView, PolicyLoss,
    };
    let hc = HeadCase::new(71, (2, 6, 90, 10), DType::Bf16);
    let (b, s, prompt, h) = (2u32, 9u32, 3u32, 10u32);
    let c = &hc.case;
    for ctx in natives() {
        let dense = check_head(
            ctx,
            &ppo(),
            &hc,
            Some(DType::F32),
            Some(5),
            (ALL_INPUTS, false),
        );
        // the 12 response rows inside [2, 9, 10] hidden states: rows 2 .. 8 of each
        let mut full = vec![wgpu_policy_loss::half::bf16::ZERO; (b * s * h) as usize];
        for r in 0..12usize {
            let (seq, pos) = (r / 6, r % 6 + prompt as usize - 1);
            let at = (seq * s as usize + pos) * h as usize;
            full[at..at + h as usize]
                .copy_from_slice(&hc.hidden.bf16[r * h as usize..(r + 1) * h as usize]);
        }
        let buf = |bytes: &[u8]| ctx.upload("t", bytes);
        let hid = buf(bytemuck::cast_slice(&full));
        let w = buf(hc.lm_head.bytes());
        let per_row = c.upload_rows(ctx);
        let gh = ctx.buffer(
            "gh",
            256 + 12 * 16 * 4,
            wgpu_policy_loss::wgpu::BufferUsages::STORAGE
                | wgpu_policy_loss::wgpu::BufferUsages::COPY_SRC,
        );
        let gw = ctx.buffer(
            "gw",
            90 * 10 * 4,
            wgpu_policy_loss::wgpu::BufferUsages::STORAGE
                | wgpu_policy_loss::wgpu::BufferUsages::COPY_SRC,
        );
        let hidden =
            MatrixView::from_rows(LogitsView::response(&hid, DType::Bf16, b, s, h, prompt, 6));
        let inputs = per_row
            .head_inputs(hidden, MatrixView::new(&w, DType::Bf16, 90, h), 6)
            .with_ref_logprobs(F32View::new(&per_row.refp))
            .with_chunk_rows(5);
        // ∂L/∂h rows 16 apart from byte 256
        let gh_view = MatrixView::from_rows(
            LogitsView::new(&gh, DType::F32, 12, h)
                .with_row_stride(16)
                .with_byte_offset(256)
                .unwrap(),
        );
        let grads = HeadGradients {
            hidden: Some(gh_view),
            lm_head: Some(MatrixView::new(&gw, DType::F32, 90, h).into()),
        };
        let loss = PolicyLoss::new(ctx, ppo()).unwrap();
        let out = LossBuffers::new(ctx, 12);
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        loss.record_head(&mut enc, &inputs, &grads, &out.outputs())
            .unwrap();
        let got = ctx
            .read_back(
                enc,
                &[
                    (&out.metrics, 4),
                    (&gh, 256 + 12 * 16 * 4),
                    (&gw, 90 * 10 * 4),
                ],
            )
            .unwrap();
        let loss_bits = u32::from_le_bytes(got[0][..4].try_into().unwrap());
        assert_eq!(
            loss_bits,
            dense.loss.metrics.loss.to_bits(),
            "{}: loss",
            name(ctx)
        );
        let g: Vec<f32> = bytemuck::pod_collect_to_vec(&got[1][256..]);
        let want = dense.grad_hidden.as_ref().unwrap().to_f32();
        for row in 0..12 {
            let (gr, wr) = (&g[row * 16..row * 16 + 10], &want[row * 10..row * 10 + 10]);
            assert!(
                gr.iter().zip(wr).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{}: grad_hidden row {row}",
                name(ctx)
            );
        }
        assert_eq!(
            got[2],
            dense.grad_lm_head.as_ref().unwrap().bytes,
            "{}: grad_lm_head",
            name(ctx)
        );
    }
}

/// The 2026 options through the fused head: the sequence pass between the statistics
/// and the gradient chunks, against the reference, with a chunk that does not divide
/// the rows.
#[test]
fn head_matches_the_reference_with_the_2026_options() {
    let hc = HeadCase::new(23, (4, 6, 131, 16), DType::F32);
    for ctx in contexts() {
        for (i, (_, cfg)) in options_2026().into_iter().enumerate().step_by(2) {
            let using = Use {
                per_token_adv: i % 4 == 0,
                ..ALL_INPUTS
            };
            check_head(ctx, &cfg, &hc, Some(DType::F32), Some(5), (using, true));
        }
    }
}
