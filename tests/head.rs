//! The fused linear head against the f64 reference on every adapter: the loss, its
//! metrics, per-row log-probs and entropies, ∂L/∂h and ∂L/∂W, from hidden states and
//! the lm-head weight in every dtype, with chunks that do not divide the rows.

mod common;

use common::*;
use wgpu_policy_loss::reference::{head_grads, head_logits};
use wgpu_policy_loss::{
    Context, DType, HostHead, HostHeadLoss, KlEstimator, LossAggMode, LossConfig, PolicyLossMode,
};

/// A head batch: hidden `[rows, h]` and lm_head `[vocab, h]` in a dtype, the per-row
/// inputs of a [`LossCase`] whose old and ref log-probs lie near the head's own.
struct HeadCase {
    h: u32,
    hidden: Logits,
    lm_head: Logits,
    case: LossCase,
}

impl HeadCase {
    fn new(seed: u64, (seqs, rps, vocab, h): (u32, u32, u32, u32), dtype: DType) -> Self {
        let rows = (seqs * rps) as usize;
        let hidden = Logits::from_f32(dtype, &random_logits(seed + 7, rows * h as usize, 0.5));
        let w_scale = 2.0 / (h as f32).sqrt();
        let lm_head = Logits::from_f32(
            dtype,
            &random_logits(seed + 8, vocab as usize * h as usize, w_scale),
        );
        let mut case = LossCase::new(seed, seqs, rps, vocab);
        let x = head_logits(&hidden.values(), &lm_head.values(), h as usize);
        case.logits = x.iter().map(|&v| v as f32).collect();
        // the old and ref log-probs move with the head's logits (near 1 ratios)
        let ids: Vec<u32> = case.targets.iter().map(|&t| t.min(vocab - 1)).collect();
        let exact =
            wgpu_policy_loss::reference::row_stats_batch(&case.logits, vocab as usize, &ids, 1.0);
        for (i, s) in exact.iter().enumerate() {
            let shift = (case.old[i] as f64 - s.logp).clamp(-5.0, 0.6);
            case.old[i] = (s.logp
                + if i % 5 == 2 {
                    -5.0
                } else {
                    shift.clamp(-0.6, 0.6)
                }) as f32;
            case.refp[i] = case.old[i] + 0.3 * ((i % 3) as f32 - 1.0);
            if case.mask[i] > 0.0 {
                case.rollout[i] = case.old[i] + 0.2 * ((i % 4) as f32 - 1.5);
            }
        }
        HeadCase {
            h,
            hidden,
            lm_head,
            case,
        }
    }

    fn host(&self, using: Use, rollout: bool, chunk: Option<u32>) -> HostHead<'_> {
        let c = &self.case;
        HostHead {
            hidden: self.hidden.host(),
            lm_head: self.lm_head.host(),
            hidden_dim: self.h,
            rows_per_seq: Some(c.rows_per_seq),
            targets: &c.targets,
            mask: &c.mask,
            advantages: if using.per_token_adv {
                &c.adv_tok
            } else {
                &c.adv_seq
            },
            old_logprobs: using.old.then_some(&c.old[..]),
            ref_logprobs: using.refp.then_some(&c.refp[..]),
            rollout_logprobs: rollout.then_some(&c.rollout[..]),
            chunk_rows: chunk,
        }
    }
}

/// Every element of `got` within `1e-4·max|want|` (+ the output dtype's half ulp).
fn check_grad(what: &str, got: &wgpu_policy_loss::HostGrad, want: &[f64]) {
    let g = got.to_f32();
    assert_eq!(g.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |a, &b| a.max(b.abs())).max(1e-30);
    let rel = match got.dtype {
        DType::F32 => 0.0,
        DType::F16 => 2f64.powi(-11),
        DType::Bf16 => 2f64.powi(-8),
    };
    for (i, (&gg, &w)) in g.iter().zip(want).enumerate() {
        let t = 2e-4 * scale + 1e-9 + rel * w.abs() * 1.01;
        let err = (gg as f64 - w).abs();
        assert!(
            err <= t,
            "{what}: [{i}] = {gg}, want {w} (err {err:.3e} > {t:.3e})"
        );
    }
}

/// Runs the head on `hc` and compares everything with the reference.
fn check_head(
    ctx: &Context,
    cfg: &LossConfig,
    hc: &HeadCase,
    grad: Option<DType>,
    chunk: Option<u32>,
    (using, rollout): (Use, bool),
) -> HostHeadLoss {
    let c = &hc.case;
    let what = format!(
        "{} {}→{grad:?} chunk {chunk:?} {cfg:?} {using:?}",
        name(ctx),
        hc.hidden.dtype
    );
    let got = ctx
        .policy_loss_head(cfg, &hc.host(using, rollout, chunk), grad)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let x = head_logits(&hc.hidden.values(), &hc.lm_head.values(), hc.h as usize);
    let want = c.reference(cfg, &x, using, rollout);
    let tol = |w: f64| 5e-5 + 5e-5 * w.abs();
    let m = &got.loss.metrics;
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
    for r in (0..c.rows()).filter(|&r| c.mask[r] > 0.0) {
        close(
            got.loss.logprobs[r],
            want.logp[r],
            tolerance(want.logp[r].abs() + 10.0),
        )
        .unwrap_or_else(|e| panic!("{what}: logprobs[{r}]: {e}"));
        close(got.loss.entropy[r], want.entropy[r], tolerance(10.0))
            .unwrap_or_else(|e| panic!("{what}: entropy[{r}]: {e}"));
    }
    if grad.is_some() {
        let mask: Vec<f64> = c.mask.iter().map(|&m| m as f64).collect();
        let (dh, dw) = head_grads(
            &want.grad,
            &hc.hidden.values(),
            &hc.lm_head.values(),
            hc.h as usize,
            &mask,
        );
        check_grad(
            &format!("{what}: grad_hidden"),
            got.grad_hidden.as_ref().unwrap(),
            &dh,
        );
        check_grad(
            &format!("{what}: grad_lm_head"),
            got.grad_lm_head.as_ref().unwrap(),
            &dw,
        );
        let gh = got.grad_hidden.as_ref().unwrap().to_f32();
        for r in (0..c.rows()).filter(|&r| c.mask[r] == 0.0) {
            let row = &gh[r * hc.h as usize..(r + 1) * hc.h as usize];
            assert!(
                row.iter().all(|&v| v == 0.0),
                "{what}: masked row {r} has a gradient"
            );
        }
    }
    got
}

fn ppo() -> LossConfig {
    loss_config(
        PolicyLossMode::PpoClip,
        LossAggMode::TokenMean,
        KlEstimator::K3,
        (1.0, 0.05, 0.01, Some(3.0)),
    )
}

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

/// `eval` with `hidden` and `lm_head`: the CLI contract of the fused head.
#[cfg(feature = "cli")]
mod eval {
    use super::*;
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wgpu-policy-loss-head-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn dtype_of(d: DType) -> Dtype {
        match d {
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::Bf16 => Dtype::BF16,
        }
    }

    /// The input file of `hc` as `[B, S, H]` hidden, with `extra` tensors (or without
    /// those named in `drop`).
    fn write_input(
        path: &std::path::Path,
        hc: &HeadCase,
        extra: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
        drop: &[&str],
    ) {
        let c = &hc.case;
        let (b, s) = (c.seqs as usize, c.rows_per_seq as usize);
        let (v, h) = (c.vocab as usize, hc.h as usize);
        let ids: Vec<i64> = c.targets.iter().map(|&t| t as i64).collect();
        let mut t: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            (
                "hidden",
                dtype_of(hc.hidden.dtype),
                vec![b, s, h],
                hc.hidden.bytes().to_vec(),
            ),
            (
                "lm_head",
                dtype_of(hc.lm_head.dtype),
                vec![v, h],
                hc.lm_head.bytes().to_vec(),
            ),
            (
                "targets",
                Dtype::I64,
                vec![b, s],
                bytemuck::cast_slice(&ids).to_vec(),
            ),
            (
                "mask",
                Dtype::F32,
                vec![b, s],
                bytemuck::cast_slice(&c.mask).to_vec(),
            ),
            (
                "advantages",
                Dtype::F32,
                vec![b],
                bytemuck::cast_slice(&c.adv_seq).to_vec(),
            ),
            (
                "old_logprobs",
                Dtype::F32,
                vec![b, s],
                bytemuck::cast_slice(&c.old).to_vec(),
            ),
        ];
        t.retain(|x| !drop.contains(&x.0));
        t.extend(extra.iter().cloned());
        let views: Vec<(String, TensorView<'_>)> = t
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::tensor::serialize_to_file(views, None, path).unwrap();
    }

    fn fails(input: &std::path::Path, flags: &[&str], named: &str) {
        let out = common::eval(input, &tmp("never.safetensors"), flags);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains(named),
            "{flags:?}: the error does not name {named}: {err}"
        );
    }

    fn grad_of(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        let d = t.data();
        let v = match t.dtype() {
            Dtype::F32 => bytemuck::pod_collect_to_vec(d),
            Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, wgpu_policy_loss::half::bf16>(d)
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, wgpu_policy_loss::half::f16>(d)
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            other => panic!("{name} has dtype {other:?}"),
        };
        (t.shape().to_vec(), v)
    }

    #[test]
    fn eval_takes_hidden_and_lm_head() {
        let hc = HeadCase::new(5, (2, 9, 203, 24), DType::Bf16);
        let c = &hc.case;
        let input = tmp("head.safetensors");
        write_input(&input, &hc, &[], &[]);
        let cfg = LossConfig {
            clip_ratio_c: Some(3.0),
            ..LossConfig::default()
        };
        let x = head_logits(&hc.hidden.values(), &hc.lm_head.values(), hc.h as usize);
        let using = Use {
            per_token_adv: false,
            old: true,
            refp: false,
        };
        let want = c.reference(&cfg, &x, using, false);
        let mask: Vec<f64> = c.mask.iter().map(|&m| m as f64).collect();
        let (dh, dw) = head_grads(
            &want.grad,
            &hc.hidden.values(),
            &hc.lm_head.values(),
            hc.h as usize,
            &mask,
        );
        for (flags, gd) in [
            (
                &["--head-chunk", "4", "--clip-ratio-c", "3"][..],
                DType::F32,
            ),
            (
                &["--grad-dtype", "bf16", "--clip-ratio-c", "3"],
                DType::Bf16,
            ),
            (
                &[
                    "--head-chunk",
                    "100",
                    "--grad-dtype",
                    "f16",
                    "--clip-ratio-c",
                    "3",
                ],
                DType::F16,
            ),
        ] {
            let output = tmp("head-out.safetensors");
            let out = common::eval(&input, &output, flags);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let bytes = std::fs::read(&output).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let loss: f32 = bytemuck::pod_read_unaligned(st.tensor("loss").unwrap().data());
            close(loss, want.loss, 5e-5 + 5e-5 * want.loss.abs()).unwrap();
            assert!(
                st.tensor("grad_logits").is_err(),
                "{flags:?}: grad_logits written"
            );
            for (name, t) in st.tensors() {
                assert!(
                    t.shape() != [2, 9, 203] && t.shape() != [18, 203],
                    "{name} is [T, V]"
                );
            }
            assert_eq!(st.tensor("logprobs").unwrap().shape(), [2, 9]);
            let (shape, gh) = grad_of(&st, "grad_hidden");
            assert_eq!(shape, [2, 9, 24]);
            let (shape, gw) = grad_of(&st, "grad_lm_head");
            assert_eq!(shape, [203, 24]);
            let host = |v: Vec<f32>| {
                let bytes = match gd {
                    DType::F32 => bytemuck::cast_slice(&v).to_vec(),
                    DType::F16 => bytemuck::cast_slice(
                        &v.iter()
                            .map(|&x| wgpu_policy_loss::half::f16::from_f32(x))
                            .collect::<Vec<_>>(),
                    )
                    .to_vec(),
                    DType::Bf16 => bytemuck::cast_slice(
                        &v.iter()
                            .map(|&x| wgpu_policy_loss::half::bf16::from_f32(x))
                            .collect::<Vec<_>>(),
                    )
                    .to_vec(),
                };
                wgpu_policy_loss::HostGrad { dtype: gd, bytes }
            };
            check_grad(&format!("{flags:?} grad_hidden"), &host(gh), &dh);
            check_grad(&format!("{flags:?} grad_lm_head"), &host(gw), &dw);
        }
    }

    /// `bench --head`: the memory columns at the shapes, and a small shape timed
    /// fused and unfused side by side.
    #[test]
    fn bench_head_reports_memory_and_times() {
        let out = common::bin()
            .args(["bench", "--head", "--memory-only", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let qwen = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rows"] == 4096 && r["vocab"] == 151936)
            .expect("the 4096 x 896 x 151936 row");
        let (f, u) = (
            qwen["fused_bytes"].as_u64().unwrap(),
            qwen["unfused_bytes"].as_u64().unwrap(),
        );
        assert!(8 * f <= u, "fused {f} B, unfused {u} B");
        let out = common::bin()
            .args([
                "bench",
                "--head",
                "--head-shape",
                "40x16x300:bf16",
                "--samples",
                "1",
                "--seconds",
                "0",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("40x16x300 bf16") && text.contains("GFLOP/s"),
            "{text}"
        );
    }

    #[test]
    fn eval_names_bad_head_input() {
        let hc = HeadCase::new(6, (2, 4, 33, 8), DType::F32);
        let p = tmp("bad.safetensors");
        let logits = vec![0u8; 2 * 4 * 33 * 4];
        write_input(
            &p,
            &hc,
            &[("logits", Dtype::F32, vec![2, 4, 33], logits.clone())],
            &[],
        );
        fails(&p, &[], "logits");
        write_input(&p, &hc, &[], &["lm_head"]);
        fails(&p, &[], "lm_head");
        write_input(&p, &hc, &[], &["hidden"]);
        fails(&p, &[], "hidden");
        write_input(
            &p,
            &hc,
            &[("hidden", Dtype::F32, vec![64], vec![0; 256])],
            &["hidden"],
        );
        fails(&p, &[], "hidden");
        write_input(
            &p,
            &hc,
            &[("lm_head", Dtype::F32, vec![33, 9], vec![0; 33 * 9 * 4])],
            &["lm_head"],
        );
        fails(&p, &[], "lm_head");
        let bf = vec![0u8; 33 * 8 * 2];
        write_input(
            &p,
            &hc,
            &[("lm_head", Dtype::BF16, vec![33, 8], bf)],
            &["lm_head"],
        );
        fails(&p, &[], "lm_head");
        write_input(&p, &hc, &[], &[]);
        fails(&p, &["--head-chunk", "0"], "--head-chunk");
        fails(&p, &["--parts", "2"], "--parts");
        fails(&p, &["--vocab-shards", "2"], "--vocab-shards");
        // a masked-in id outside [0, V): its row, the id and V
        let mut ids: Vec<i64> = hc.case.targets.iter().map(|&t| t as i64).collect();
        let row = (0..ids.len()).find(|&r| hc.case.mask[r] > 0.0).unwrap();
        ids[row] = 33;
        write_input(
            &p,
            &hc,
            &[(
                "targets",
                Dtype::I64,
                vec![2, 4],
                bytemuck::cast_slice(&ids).to_vec(),
            )],
            &["targets"],
        );
        fails(&p, &[], "33");
        let l = tmp("logits.safetensors");
        write_input(
            &l,
            &hc,
            &[("logits", Dtype::F32, vec![2, 4, 33], logits)],
            &["hidden", "lm_head"],
        );
        fails(&l, &["--head-chunk", "4"], "--head-chunk");
    }
}

/// Strided views through the device API: the response slice of `[B, S, H]` hidden
/// states (prompt rows skipped, sequences apart), and ∂L/∂h into a padded buffer at a
/// byte offset, give the bits of the dense host call on the same rows.
#[test]
fn head_reads_strided_views_and_writes_strided_gradients() {
    use wgpu_policy_loss::{
        Advantages, F32View, HeadGradients, HeadInputs, LogitsView, LossBuffers, MatrixView,
        PolicyLoss, TargetsView,
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
        let (y, m) = (
            buf(bytemuck::cast_slice(&c.targets)),
            buf(bytemuck::cast_slice(&c.mask)),
        );
        let (a, o) = (
            buf(bytemuck::cast_slice(&c.adv_seq)),
            buf(bytemuck::cast_slice(&c.old)),
        );
        let r = buf(bytemuck::cast_slice(&c.refp));
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
        let inputs = HeadInputs::new(
            hidden,
            MatrixView::new(&w, DType::Bf16, 90, h),
            TargetsView::new(&y).with_sequences(6, 6),
            F32View::new(&m),
            Advantages::PerSequence(F32View::new(&a)),
        )
        .with_old_logprobs(F32View::new(&o))
        .with_ref_logprobs(F32View::new(&r))
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
            lm_head: Some(MatrixView::new(&gw, DType::F32, 90, h)),
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
