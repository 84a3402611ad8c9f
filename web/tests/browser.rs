//! The correctness suite in a real browser: the library compiled for
//! `wasm32-unknown-unknown`, on the browser's WebGPU adapter (SwiftShader in headless
//! Chromium on CI), against the same f64 reference as natively. Row statistics and the
//! policy loss in every mode, aggregation and dtype, shapes up to V = 151936, and bad
//! input as errors. `scripts/web-test.sh` runs it (`wasm-bindgen-test-runner` drives
//! Chromium through chromedriver; `webdriver.json` passes the WebGPU flags).

use wasm_bindgen_test::*;
use wgpu_policy_loss::check::Lcg;
use wgpu_policy_loss::half::{bf16, f16};
use wgpu_policy_loss::reference::{self, compare, Batch};
use wgpu_policy_loss::{
    check, Context, DType, Error, HostBatch, HostLogits, KlEstimator, LossAggMode, LossConfig,
    PolicyLossMode,
};

wasm_bindgen_test_configure!(run_in_browser);

/// The browser's adapter; a browser without WebGPU is a loud failure, never a pass.
async fn gpu() -> Context {
    let ctx = Context::new_async().await.unwrap_or_else(|e| {
        panic!("{e}: Chromium needs --enable-unsafe-webgpu (web/webdriver.json) for an adapter")
    });
    console_log!("adapter: {} [{}]", ctx.describe(), ctx.paths().describe());
    ctx
}

/// Logits rounded to `dtype`, and their exact values.
struct Logits {
    f32: Vec<f32>,
    f16: Vec<f16>,
    bf16: Vec<bf16>,
    dtype: DType,
}

impl Logits {
    fn new(seed: u64, n: usize, dtype: DType) -> Self {
        let mut r = Lcg(seed);
        let f32: Vec<f32> = (0..n).map(|_| (r.uniform() as f32 - 0.5) * 8.0).collect();
        Logits {
            f16: f32.iter().map(|&x| f16::from_f32(x)).collect(),
            bf16: f32.iter().map(|&x| bf16::from_f32(x)).collect(),
            f32,
            dtype,
        }
    }

    fn host(&self) -> HostLogits<'_> {
        match self.dtype {
            DType::F32 => HostLogits::F32(&self.f32),
            DType::F16 => HostLogits::F16(&self.f16),
            DType::Bf16 => HostLogits::Bf16(&self.bf16),
        }
    }

    fn exact(&self) -> Vec<f64> {
        let h = self.host();
        (0..h.len()).map(|i| h.get(i)).collect()
    }
}

#[wasm_bindgen_test]
async fn row_stats_match_the_reference() {
    let ctx = gpu().await;
    let mut worst = 0f64;
    for dtype in DType::ALL {
        for (rows, vocab) in [(5usize, 33u32), (3, 4100), (2, 151_936)] {
            let v = vocab as usize;
            let l = Logits::new(vocab as u64, rows * v, dtype);
            let targets: Vec<u32> = (0..rows as u32).map(|r| (r * 7919) % vocab).collect();
            let got = ctx
                .row_stats_async(l.host(), vocab, &targets, 0.8)
                .await
                .unwrap();
            let x = l.exact();
            for r in 0..rows {
                let want = reference::row_stats(&x[r * v..(r + 1) * v], targets[r] as usize, 0.8);
                for (what, g, w) in [
                    ("lse", got.lse[r], want.lse),
                    ("logp", got.logp[r], want.logp),
                    ("entropy", got.entropy[r], want.entropy),
                ] {
                    let err = (g as f64 - w).abs();
                    assert!(
                        err <= 1e-4 * (1.0 + w.abs()),
                        "{dtype} {rows}x{vocab} row {r}: {what} {g}, want {w}"
                    );
                    worst = compare::max_err(worst, err / (1.0 + w.abs()));
                }
                assert!(
                    got.logp[r] <= 0.0,
                    "{dtype} row {r}: logp {} > 0",
                    got.logp[r]
                );
            }
        }
    }
    console_log!("row_stats: max error {worst:.1e} (relative to 1 + |value|)");
}

/// Every mode × aggregation × dtype on three sequences of five rows (one masked out
/// entirely), with old and reference log-probs, the KL and entropy terms and dual-clip.
#[wasm_bindgen_test]
async fn policy_loss_in_every_mode_aggregation_and_dtype() {
    let ctx = gpu().await;
    let (seqs, rps, vocab) = (3usize, 5usize, 37u32);
    let (rows, v) = (seqs * rps, vocab as usize);
    let mut r = Lcg(5);
    let targets: Vec<u32> = (0..rows)
        .map(|_| (r.uniform() * v as f64) as u32 % vocab)
        .collect();
    let mask: Vec<f32> = (0..rows)
        .map(|i| {
            if (rps..2 * rps).contains(&i) || i % 7 == 3 {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let adv: Vec<f32> = (0..seqs)
        .map(|_| (r.uniform() as f32 - 0.5) * 3.0)
        .collect();
    let old: Vec<f32> = (0..rows)
        .map(|_| -(r.uniform() as f32) * 4.0 - 0.1)
        .collect();
    let refp: Vec<f32> = old
        .iter()
        .map(|&o| o + (r.uniform() as f32 - 0.5) * 0.4)
        .collect();
    let f = |a: &[f32]| a.iter().map(|&b| b as f64).collect::<Vec<_>>();
    let (mut loss_err, mut grad_err) = (0f64, 0f64);
    let mut aggs: Vec<(LossAggMode, Option<f32>)> =
        LossAggMode::ALL.into_iter().map(|a| (a, None)).collect();
    aggs.push((LossAggMode::TokenMean, Some(40.0)));
    for dtype in DType::ALL {
        let l = Logits::new(11, rows * v, dtype);
        let x = l.exact();
        for mode in PolicyLossMode::ALL {
            for &(agg, global) in &aggs {
                let cfg = LossConfig {
                    mode,
                    loss_agg_mode: agg,
                    global_normalizer: global,
                    kl_loss_type: KlEstimator::K3,
                    kl_coef: 0.1,
                    entropy_coeff: 0.01,
                    clip_ratio_c: Some(3.0),
                    temperature: 0.9,
                    dro_beta: Some(0.3),
                    ..LossConfig::default()
                };
                let batch = HostBatch {
                    kept: None,
                    temperatures: None,
                    logits: l.host(),
                    vocab,
                    rows_per_seq: Some(rps as u32),
                    targets: &targets,
                    mask: &mask,
                    advantages: &adv,
                    old_logprobs: Some(&old),
                    ref_logprobs: Some(&refp),
                };
                let what = format!("{mode:?} {agg:?} {global:?} {dtype}");
                let got = ctx
                    .policy_loss_async(&cfg, &batch, Some(dtype))
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let (mf, af, of, rf) = (f(&mask), f(&adv), f(&old), f(&refp));
                let b = Batch {
                    logits: &x,
                    vocab: v,
                    rows_per_seq: rps,
                    targets: &targets,
                    mask: &mf,
                    advantages: &af,
                    old_logp: Some(&of),
                    ref_logp: Some(&rf),
                };
                let want = reference::policy_loss(&cfg, &b).unwrap();
                let e = (got.metrics.loss as f64 - want.loss).abs();
                assert!(
                    e <= 2e-5 * (1.0 + want.loss.abs()),
                    "{what}: loss {} vs {}",
                    got.metrics.loss,
                    want.loss
                );
                loss_err = compare::max_err(loss_err, e);
                // the library's rule, shared with the native suite and `check`
                let s = compare::grad_sensitivity(&cfg, &b, None).unwrap();
                let g = got.grad.unwrap();
                let c = compare::logits_grad_with(&g.to_f32(), &want.grad, g.dtype.into(), &s)
                    .unwrap_or_else(|e| panic!("{what}: grad {e} (vocab {v})"));
                let share = c.share();
                grad_err = compare::max_err(grad_err, share);
                // the same comparison fails where the result has a NaN or ±Inf
                let mut bad = g.to_f32();
                let at = bad.len() / 2;
                for x in [f32::NAN, f32::INFINITY] {
                    bad[at] = x;
                    let r = compare::logits_grad_with(&bad, &want.grad, g.dtype.into(), &s);
                    assert!(r.is_err(), "{what}: a {x} at {at} passed");
                }
            }
        }
    }
    console_log!(
        "policy loss: max loss error {loss_err:.1e}, gradient error {grad_err:.2} of its bound"
    );
}

/// The CLI's `check` cases (every mode and dtype, the options cycled, shapes up to
/// V = 151936) in the browser.
#[wasm_bindgen_test]
async fn the_check_passes() {
    let ctx = gpu().await;
    for dtype in DType::ALL {
        let mut worst = check::Worst::default();
        for case in check::cases(dtype) {
            let why = check::run_case_async(&ctx, &case, &mut worst)
                .await
                .unwrap_or_else(|e| panic!("{case:?}: {e}"));
            assert!(why.is_none(), "{}", why.unwrap_or_default());
        }
        console_log!(
            "check {dtype}: {} cases, loss {:.1e}, log-prob {:.1e}, grad/bound {:.2}",
            worst.cases,
            worst.loss,
            worst.logp,
            worst.grad
        );
    }
}

#[wasm_bindgen_test]
async fn bad_input_is_an_error() {
    let ctx = gpu().await;
    let x = vec![0.5f32; 4 * 10];
    let batch = |targets: &'static [u32]| HostBatch {
        kept: None,
        temperatures: None,
        logits: HostLogits::F32(Box::leak(x.clone().into_boxed_slice())),
        vocab: 10,
        rows_per_seq: None,
        targets,
        mask: &[1.0, 1.0, 0.0, 1.0],
        advantages: &[1.0],
        old_logprobs: None,
        ref_logprobs: None,
    };
    // a masked-in id outside the vocabulary: the error names the first such row
    let e = ctx
        .policy_loss_async(&LossConfig::default(), &batch(&[1, 2, 99, 10]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::TargetOutOfRange { row: 3, id: 10, .. }),
        "{e}"
    );
    let bad_tau = LossConfig {
        temperature: 0.0,
        ..LossConfig::default()
    };
    let e = ctx
        .policy_loss_async(&bad_tau, &batch(&[1, 2, 3, 4]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::InvalidArgument {
                arg: "temperature",
                ..
            }
        ),
        "{e}"
    );
    let e = ctx
        .row_stats_async(HostLogits::F32(&x[..15]), 10, &[0], 1.0)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { arg: "logits", .. }),
        "{e}"
    );
}

/// docs/MATH.md#bad-input in the browser: a NaN old log-prob on a masked-in row is an
/// error naming it on the host path; on the device path Tint's shaders keep it a NaN
/// (the loss is NaN, never clamped into a number), count the row and `check` names it.
#[wasm_bindgen_test]
async fn nan_inputs_are_named_or_propagate() {
    use wgpu_policy_loss::{
        Advantages, F32View, Gradient, LogitsView, LossBuffers, LossInputs, Metrics, PolicyLoss,
        RowInput, TargetsView,
    };
    let ctx = gpu().await;
    let (rows, vocab) = (4usize, 10u32);
    let x = Logits::new(7, rows * vocab as usize, DType::F32);
    let (targets, mask, adv) = ([1u32, 2, 3, 4], [1.0f32, 1.0, 0.0, 1.0], [0.7f32]);
    let old = [-2.0f32, f32::NAN, -2.5, -1.5];
    let batch = HostBatch {
        kept: None,
        temperatures: None,
        logits: x.host(),
        vocab,
        rows_per_seq: None,
        targets: &targets,
        mask: &mask,
        advantages: &adv,
        old_logprobs: Some(&old),
        ref_logprobs: None,
    };
    let cfg = LossConfig::default();
    let e = ctx.policy_loss_async(&cfg, &batch, None).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidInput {
                tensor: RowInput::OldLogprobs,
                row: 1,
                ..
            }
        ),
        "{e}"
    );
    let up = |v: &[f32]| ctx.upload("v", bytemuck::cast_slice(v));
    let (xb, yb) = (up(&x.f32), ctx.upload("y", bytemuck::cast_slice(&targets)));
    let (mb, ab, ob) = (up(&mask), up(&adv), up(&old));
    let inputs = LossInputs::new(
        LogitsView::new(&xb, DType::F32, rows as u32, vocab),
        TargetsView::new(&yb),
        F32View::new(&mb),
        Advantages::PerSequence(F32View::new(&ab)),
    )
    .with_old_logprobs(F32View::new(&ob));
    let out = LossBuffers::new(&ctx, rows as u32);
    let loss = PolicyLoss::new(&ctx, cfg).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    loss.record(&mut enc, &inputs, Gradient::InPlace, &out.outputs())
        .unwrap();
    let got = ctx
        .read_f32s_async(enc, &[&out.metrics], Metrics::LEN)
        .await
        .unwrap();
    let m = Metrics::from_slice(&got[0]);
    assert!(m.loss.is_nan(), "loss {}", m.loss);
    assert_eq!(m.invalid_input_rows, 1.0);
    assert_eq!(m.check(vocab).unwrap_err().to_string(), e.to_string());
}

/// The fused head at 1792 × 151936 (H = 8): its f32 logits (1.09 GB) exceed
/// SwiftShader's largest buffer (1 GiB) and are never held whole; the loss, log-probs,
/// ∂L/∂h and ∂L/∂W match the f64 reference, made a row at a time here too.
#[wasm_bindgen_test]
async fn the_head_runs_where_the_logits_exceed_the_largest_buffer() {
    let ctx = gpu().await;
    let (rows, h, vocab) = (1792usize, 8usize, 151_936usize);
    let logits_bytes = (rows * vocab * 4) as u64;
    let largest = ctx.device().limits().max_buffer_size;
    console_log!("head: f32 logits {logits_bytes} B, largest buffer {largest} B");
    assert!(
        logits_bytes > largest,
        "the case must exceed the largest buffer"
    );
    let mut r = Lcg(23);
    let hidden: Vec<f32> = (0..rows * h)
        .map(|_| (r.uniform() as f32 - 0.5) * 2.0)
        .collect();
    let w: Vec<f32> = (0..vocab * h)
        .map(|_| (r.uniform() as f32 - 0.5) * 2.0)
        .collect();
    let targets: Vec<u32> = (0..rows).map(|i| (i * 7919 % vocab) as u32).collect();
    let mask: Vec<f32> = (0..rows)
        .map(|i| if i % 5 == 4 { 0.0 } else { 1.0 })
        .collect();
    let adv = vec![0.7f32];
    let cfg = LossConfig {
        mode: PolicyLossMode::Reinforce,
        ..LossConfig::default()
    };
    let batch = wgpu_policy_loss::HostHead {
        kept: None,
        temperatures: None,
        hidden: HostLogits::F32(&hidden),
        lm_head: HostLogits::F32(&w),
        hidden_dim: h as u32,
        rows_per_seq: None,
        targets: &targets,
        mask: &mask,
        advantages: &adv,
        old_logprobs: None,
        ref_logprobs: None,
        rollout_logprobs: None,
        chunk_rows: None,
    };
    let got = ctx
        .policy_loss_head_async(&cfg, &batch, Some(DType::F32))
        .await
        .unwrap();
    // REINFORCE, token-mean: L = −Σ m·A·logp / Σ m, Gz = −(m·A / Σ m)(onehot − p)
    let n: f64 = mask.iter().map(|&m| m as f64).sum();
    let (mut loss, mut dh, mut dw) = (0f64, vec![0f64; rows * h], vec![0f64; vocab * h]);
    // each element's magnitudes for the rule (reference::head_magnitudes, a row at a time)
    let (mut sh, mut sw) = (vec![[0f64; 2]; rows * h], vec![[0f64; 2]; vocab * h]);
    let (mut want_logp, mut gz_max) = (Vec::new(), 0f64);
    for row in 0..rows {
        let hr = &hidden[row * h..(row + 1) * h];
        let x: Vec<f64> = (0..vocab)
            .map(|v| (0..h).map(|k| hr[k] as f64 * w[v * h + k] as f64).sum())
            .collect();
        let s = reference::row_stats(&x, targets[row] as usize, 1.0);
        if mask[row] == 0.0 {
            continue;
        }
        want_logp.push((row, s.logp));
        loss -= 0.7 * s.logp / n;
        let c = -0.7 / n;
        for (v, &xv) in x.iter().enumerate() {
            let g = c * (f64::from(v == targets[row] as usize) - (xv - s.lse).exp());
            gz_max = compare::max_err(gz_max, g.abs());
            for k in 0..h {
                let (wk, hk) = (w[v * h + k] as f64, hr[k] as f64);
                dh[row * h + k] += g * wk;
                dw[v * h + k] += g * hk;
                sh[row * h + k][0] += (g * wk).abs();
                sh[row * h + k][1] += wk.abs();
                sw[v * h + k][0] += (g * hk).abs();
                sw[v * h + k][1] += hk.abs();
            }
        }
    }
    let logp_worst = |lp: &[f32]| {
        want_logp.iter().fold(0f64, |e, &(row, w)| {
            compare::max_err(e, (lp[row] as f64 - w).abs())
        })
    };
    let logp_err = logp_worst(&got.loss.logprobs);
    let mut bad = got.loss.logprobs.clone();
    bad[want_logp[want_logp.len() / 2].0] = f32::NAN;
    let worst = logp_worst(&bad);
    assert!(worst.is_nan() || worst > 1e-3, "a NaN log-prob passed");
    console_log!(
        "head: loss {} vs {loss}, max |logp err| {logp_err:.2e}",
        got.loss.metrics.loss
    );
    assert!((got.loss.metrics.loss as f64 - loss).abs() <= 1e-4 * (1.0 + loss.abs()));
    assert!(logp_err <= 1e-3, "logprobs: {logp_err}");
    for (name, g, want, n, sums) in [
        ("grad_hidden", &got.grad_hidden, &dh, vocab, &sh),
        ("grad_lm_head", &got.grad_lm_head, &dw, rows, &sw),
    ] {
        let g = g.as_ref().unwrap();
        let c = compare::head_grad(&g.to_f32(), want, g.dtype.into(), n, gz_max, sums)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let share = c.share();
        console_log!("head: {name} largest error {share:.2} of its bound");
        // and fails where the result has a NaN
        let mut bad = g.to_f32();
        let at = bad.len() - 1;
        bad[at] = f32::NAN;
        let r = compare::head_grad(&bad, want, g.dtype.into(), n, gz_max, sums);
        assert!(r.is_err(), "{name}: a NaN at {at} passed");
    }
}

/// The sampler's distribution on the head in the browser: top-p computed in the
/// kernels over each chunk's rows, with per-token temperatures and the softcap, chunks
/// that do not divide the rows, each read row's target one of its kept tokens: the
/// loss, log-probs, ∂L/∂h and ∂L/∂W against the f64 reference.
#[wasm_bindgen_test]
async fn the_head_under_the_sampler_with_top_p() {
    use wgpu_policy_loss::reference::sampler::{sampled_row, Sampler, SamplerBatch};
    let ctx = gpu().await;
    let (rows, h, vocab) = (24usize, 16usize, 301usize);
    let mut r = Lcg(41);
    let mut uni =
        |n: usize| -> Vec<f32> { (0..n).map(|_| (r.uniform() as f32 - 0.5) * 2.0).collect() };
    let (hidden, w) = (uni(rows * h), uni(vocab * h));
    let mask: Vec<f32> = (0..rows)
        .map(|i| if i % 7 == 5 { 0.0 } else { 1.0 })
        .collect();
    let temps: Vec<f32> = (0..rows).map(|i| 0.3 + 0.02 * i as f32).collect();
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (hd, wd, md) = (f64s(&hidden), f64s(&w), f64s(&mask));
    let x = reference::head_logits(&hd, &wd, h);
    let sampler = Sampler {
        softcap: Some(4.0),
        top_p: 0.8f32 as f64,
        ..Sampler::default()
    };
    // each row's target: the middle one of its kept tokens
    let targets: Vec<u32> = (0..rows)
        .map(|i| {
            let row = &x[i * vocab..(i + 1) * vocab];
            let keep = sampled_row(row, temps[i] as f64, &sampler, None)
                .unwrap()
                .keep;
            let kept: Vec<u32> = (0..vocab as u32).filter(|&v| keep[v as usize]).collect();
            assert!(
                kept.len() > 1 && kept.len() < vocab,
                "row {i} keeps {}",
                kept.len()
            );
            kept[kept.len() / 2]
        })
        .collect();
    let adv = vec![0.7f32, -0.4];
    let cfg = LossConfig {
        logit_softcap: Some(4.0),
        top_p: 0.8,
        ..LossConfig::default()
    };
    let batch = wgpu_policy_loss::HostHead {
        kept: None,
        temperatures: Some(&temps),
        hidden: HostLogits::F32(&hidden),
        lm_head: HostLogits::F32(&w),
        hidden_dim: h as u32,
        rows_per_seq: Some(12),
        targets: &targets,
        mask: &mask,
        advantages: &adv,
        old_logprobs: None,
        ref_logprobs: None,
        rollout_logprobs: None,
        chunk_rows: Some(5),
    };
    let got = ctx
        .policy_loss_head_async(&cfg, &batch, Some(DType::F32))
        .await
        .unwrap();
    let b = Batch {
        logits: &x,
        vocab,
        rows_per_seq: 12,
        targets: &targets,
        mask: &md,
        advantages: &f64s(&adv),
        old_logp: None,
        ref_logp: None,
    };
    let t = f64s(&temps);
    let sampler = SamplerBatch {
        sampler,
        temperatures: Some(&t),
        keep: None,
    };
    let want = reference::policy_loss_sampled(&cfg, &b, None, &sampler).unwrap();
    check_sampled_head(&got, &want, (&hd, &wd, &md), (h, vocab));
}

/// The sampler's distribution on the head in the browser: a given kept set a row (the
/// engine's top-p replayed; an empty range on every fourth row keeps every token) with
/// per-token temperatures and the softcap, chunks that do not divide the rows: the
/// loss, log-probs, ∂L/∂h and ∂L/∂W against the f64 reference.
#[wasm_bindgen_test]
async fn the_head_under_the_sampler_with_a_kept_set() {
    use wgpu_policy_loss::reference::sampler::{KeptSets, Sampler, SamplerBatch};
    let ctx = gpu().await;
    let (rows, h, vocab) = (24usize, 16usize, 301usize);
    let mut r = Lcg(41);
    let mut uni =
        |n: usize| -> Vec<f32> { (0..n).map(|_| (r.uniform() as f32 - 0.5) * 2.0).collect() };
    let (hidden, w) = (uni(rows * h), uni(vocab * h));
    let targets: Vec<u32> = (0..rows).map(|i| (i * 97 % vocab) as u32).collect();
    let mask: Vec<f32> = (0..rows)
        .map(|i| if i % 7 == 5 { 0.0 } else { 1.0 })
        .collect();
    let temps: Vec<f32> = (0..rows).map(|i| 0.6 + 0.05 * i as f32).collect();
    let (mut offsets, mut ids) = (vec![0u32], Vec::new());
    for (i, &y) in targets.iter().enumerate() {
        if i % 4 != 3 {
            ids.extend((0..12u32).map(|k| (y + 23 * k) % vocab as u32).rev());
        }
        offsets.push(ids.len() as u32);
    }
    let adv = vec![0.7f32, -0.4];
    let cfg = LossConfig {
        logit_softcap: Some(4.0),
        ..LossConfig::default()
    };
    let kept = KeptSets {
        offsets: &offsets,
        ids: &ids,
    };
    let batch = wgpu_policy_loss::HostHead {
        kept: Some(kept),
        temperatures: Some(&temps),
        hidden: HostLogits::F32(&hidden),
        lm_head: HostLogits::F32(&w),
        hidden_dim: h as u32,
        rows_per_seq: Some(12),
        targets: &targets,
        mask: &mask,
        advantages: &adv,
        old_logprobs: None,
        ref_logprobs: None,
        rollout_logprobs: None,
        chunk_rows: Some(5),
    };
    let got = ctx
        .policy_loss_head_async(&cfg, &batch, Some(DType::F32))
        .await
        .unwrap();
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (hd, wd, md) = (f64s(&hidden), f64s(&w), f64s(&mask));
    let x = reference::head_logits(&hd, &wd, h);
    let b = Batch {
        logits: &x,
        vocab,
        rows_per_seq: 12,
        targets: &targets,
        mask: &md,
        advantages: &f64s(&adv),
        old_logp: None,
        ref_logp: None,
    };
    let t = f64s(&temps);
    let sampler = SamplerBatch {
        sampler: Sampler {
            softcap: Some(4.0),
            ..Sampler::default()
        },
        temperatures: Some(&t),
        keep: Some(kept),
    };
    let want = reference::policy_loss_sampled(&cfg, &b, None, &sampler).unwrap();
    check_sampled_head(&got, &want, (&hd, &wd, &md), (h, vocab));
}

/// A head call under the sampler against its reference: the loss, the read rows'
/// log-probs, and ∂L/∂h and ∂L/∂W within `compare::head_grad`'s bounds.
fn check_sampled_head(
    got: &wgpu_policy_loss::HostHeadLoss,
    want: &reference::LossOutput,
    (hd, wd, md): (&[f64], &[f64], &[f64]),
    (h, vocab): (usize, usize),
) {
    let rows = md.len();
    let loss = got.loss.metrics.loss as f64;
    console_log!("head under the sampler: loss {loss} vs {}", want.loss);
    assert!((loss - want.loss).abs() <= 1e-4 * (1.0 + want.loss.abs()));
    for row in (0..rows).filter(|&i| md[i] > 0.0) {
        let (g, w) = (got.loss.logprobs[row] as f64, want.logp[row]);
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "logprobs[{row}] {g} vs {w}"
        );
    }
    let gz_max = want
        .grad
        .iter()
        .fold(0f64, |m, g| compare::max_err(m, g.abs()));
    let (dh, dw) = reference::head_grads(&want.grad, hd, wd, h, md);
    let (sh, sw) = reference::head_magnitudes(&want.grad, hd, wd, h, md);
    for (name, g, want, n, sums) in [
        ("grad_hidden", &got.grad_hidden, &dh, vocab, &sh),
        ("grad_lm_head", &got.grad_lm_head, &dw, rows, &sw),
    ] {
        let g = g.as_ref().unwrap();
        let c = compare::head_grad(&g.to_f32(), want, g.dtype.into(), n, gz_max, sums)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        console_log!(
            "head under the sampler: {name} largest error {:.2} of its bound",
            c.share()
        );
    }
}
