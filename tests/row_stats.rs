//! The fused row kernel (shaders/row_stats.wgsl) on every adapter and path, against
//! the f64 reference. Tolerance: `common::tolerance` (2e-5 + 1e-6·max(|lse|, max|z|)).

mod common;

use common::*;
use proptest::prelude::*;
use wgpu_policy_loss::reference;
use wgpu_policy_loss::{Context, DType, LogitsView, Paths, RowStatsHost, TargetsView};

/// Checks `got` row by row against the reference on the exact stored values `x`.
fn compare(
    ctx: &Context,
    what: &str,
    got: &RowStatsHost,
    x: &[f64],
    vocab: u32,
    targets: &[u32],
    tau: f32,
) -> [MaxErr; 3] {
    let want = reference::row_stats_batch(x, vocab as usize, targets, tau as f64);
    assert_eq!(got.lse.len(), want.len(), "{}: row count", name(ctx));
    let mut errs = [MaxErr::default(); 3];
    for (r, w) in want.iter().enumerate() {
        let row = &x[r * vocab as usize..(r + 1) * vocab as usize];
        let zmax = row
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |a, &v| a.max((v / tau as f64).abs()));
        let tol = tolerance(if w.lse.is_finite() { w.lse.abs() } else { 0.0 }.max(zmax));
        let pairs = [
            (got.lse[r], w.lse),
            (got.logp[r], w.logp),
            (got.entropy[r], w.entropy),
        ];
        for (k, (g, wv)) in pairs.into_iter().enumerate() {
            match close(g, wv, tol) {
                Ok(e) => errs[k].add(r, e),
                Err(msg) => panic!(
                    "{} {what} V={vocab} τ={tau} row {r} {}: {msg}",
                    name(ctx),
                    ["lse", "logp", "entropy"][k]
                ),
            }
        }
        assert!(
            got.logp[r] <= 0.0 || got.logp[r].is_nan(),
            "{} {what}: log-prob {} > 0 at row {r}",
            name(ctx),
            got.logp[r]
        );
    }
    errs
}

/// Runs the host API on `logits` and compares with the reference.
fn check(ctx: &Context, logits: &Logits, vocab: u32, targets: &[u32], tau: f32) -> [MaxErr; 3] {
    let got = ctx
        .row_stats(logits.host(), vocab, targets, tau)
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    compare(
        ctx,
        logits.dtype.name(),
        &got,
        &logits.values(),
        vocab,
        targets,
        tau,
    )
}

#[test]
fn every_dtype_and_vocab_size() {
    for ctx in contexts() {
        for dtype in DType::ALL {
            for (i, &vocab) in [1u32, 7, 255, 256, 257, 4099, 50257, 151936]
                .iter()
                .enumerate()
            {
                for (j, &rows) in [1usize, 5, 64, 130].iter().enumerate() {
                    if vocab as usize * rows > 2_000_000 {
                        continue; // large vocabularies: 1 and 5 rows
                    }
                    let seed = (i * 8 + j) as u64;
                    let x = random_logits(seed, rows * vocab as usize, 3.0);
                    let logits = Logits::from_f32(dtype, &x);
                    check(ctx, &logits, vocab, &random_targets(seed, rows, vocab), 1.0);
                }
            }
        }
    }
}

#[test]
fn temperature() {
    for ctx in contexts() {
        for dtype in DType::ALL {
            for tau in [0.05f32, 0.6, 1.0, 1.7, 25.0] {
                let (rows, vocab) = (9usize, 3001u32);
                let logits = Logits::from_f32(dtype, &random_logits(7, rows * vocab as usize, 5.0));
                check(ctx, &logits, vocab, &random_targets(7, rows, vocab), tau);
            }
        }
    }
}

#[test]
fn extreme_and_infinite_logits() {
    let vocab = 1000u32;
    let mut rows: Vec<Vec<f32>> = Vec::new();
    // ±1e4: exp over- and underflows without the max shift
    rows.push(
        (0..vocab)
            .map(|v| if v % 3 == 0 { 1e4 } else { -1e4 })
            .collect(),
    );
    rows.push(
        (0..vocab)
            .map(|v| if v == 17 { 1e4 } else { -1e4 + v as f32 })
            .collect(),
    );
    rows.push((0..vocab).map(|v| (v as f32 - 500.0) * 20.0).collect());
    // -inf entries (masked vocabulary), at the start, in the middle, all but one
    rows.push(
        (0..vocab)
            .map(|v| {
                if v < 600 {
                    f32::NEG_INFINITY
                } else {
                    v as f32 * 0.01
                }
            })
            .collect(),
    );
    rows.push(
        (0..vocab)
            .map(|v| if v % 2 == 1 { f32::NEG_INFINITY } else { 0.5 })
            .collect(),
    );
    rows.push(
        (0..vocab)
            .map(|v| if v == 999 { 3.0 } else { f32::NEG_INFINITY })
            .collect(),
    );
    let targets = vec![0u32, 17, 999, 700, 3, 999];
    // plus a row whose target has probability 0: log-prob -inf
    rows.push(
        (0..vocab)
            .map(|v| if v == 5 { f32::NEG_INFINITY } else { 1.0 })
            .collect(),
    );
    // +inf entries take all the mass: lse +inf, entropy log 2, finite target -inf;
    // a row of only -inf: lse -inf, log-prob and entropy NaN
    rows.push(
        (0..vocab)
            .map(|v| {
                if v == 3 || v == 900 {
                    f32::INFINITY
                } else {
                    1.0
                }
            })
            .collect(),
    );
    rows.push(vec![f32::NEG_INFINITY; vocab as usize]);
    let targets: Vec<u32> = targets.into_iter().chain([5, 4, 0]).collect();
    let flat: Vec<f32> = rows.concat();
    for ctx in contexts() {
        for dtype in DType::ALL {
            for tau in [1.0f32, 0.5] {
                let logits = Logits::from_f32(dtype, &flat);
                check(ctx, &logits, vocab, &targets, tau);
            }
        }
    }
}

#[test]
fn nan_and_inf_stay_in_their_rows() {
    // NaN makes its row NaN; +inf takes the row's mass (see reference::row_stats);
    // the rows around them are untouched
    let (rows, vocab) = (6usize, 513u32);
    let mut x = random_logits(11, rows * vocab as usize, 2.0);
    x[vocab as usize + 100] = f32::NAN; // row 1
    x[3 * vocab as usize + 7] = f32::INFINITY; // row 3
    x[4 * vocab as usize + 9] = f32::NAN; // row 4, the target's own logit
    let mut targets = random_targets(11, rows, vocab);
    targets[4] = 9;
    for ctx in contexts() {
        for dtype in DType::ALL {
            let logits = Logits::from_f32(dtype, &x);
            let got = ctx.row_stats(logits.host(), vocab, &targets, 1.0).unwrap();
            compare(
                ctx,
                dtype.name(),
                &got,
                &logits.values(),
                vocab,
                &targets,
                1.0,
            );
        }
    }
}

/// Full-sequence logits [B, S, V] with the seed's shift, and a response slice, read in
/// place from one larger buffer at a byte offset.
#[test]
fn shifted_and_response_views() {
    let (batch, seq, vocab) = (3u32, 9u32, 301u32);
    let lead = 77usize; // elements before the tensor, so the view starts unaligned
    let n = (batch * seq * vocab) as usize;
    let values = random_logits(5, lead + n, 3.0);
    let ids: Vec<u32> = random_targets(5, (batch * seq) as usize, vocab);
    for ctx in contexts() {
        for dtype in DType::ALL {
            let logits = Logits::from_f32(dtype, &values);
            let all = logits.values();
            let off = lead as u64 * dtype.size();
            let v = vocab as usize;
            let s = seq as usize;
            // (prompt_len, response_len); (1, seq-1) is `shifted`
            for (prompt, resp) in [(1u32, seq - 1), (4, 5), (2, 3)] {
                let got = run_views(ctx, logits.bytes(), &ids, 0.8, |x, y| {
                    let lv = if (prompt, resp) == (1, seq - 1) {
                        LogitsView::shifted(x, dtype, batch, seq, vocab)
                    } else {
                        LogitsView::response(x, dtype, batch, seq, vocab, prompt, resp)
                    };
                    let tv = if (prompt, resp) == (1, seq - 1) {
                        TargetsView::shifted(y, seq)
                    } else {
                        TargetsView::response(y, seq, prompt, resp)
                    };
                    (lv.with_byte_offset(off).unwrap(), tv)
                })
                .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
                // the same rows gathered by hand on the host
                let mut x = Vec::new();
                let mut t = Vec::new();
                for b in 0..batch as usize {
                    for p in 0..resp as usize {
                        let pos = prompt as usize - 1 + p;
                        let start = lead + (b * s + pos) * v;
                        x.extend_from_slice(&all[start..start + v]);
                        t.push(ids[b * s + pos + 1]);
                    }
                }
                compare(
                    ctx,
                    &format!("{dtype} response({prompt},{resp})"),
                    &got,
                    &x,
                    vocab,
                    &t,
                    0.8,
                );
            }
        }
    }
}

/// Rows with a stride larger than V (padding between rows) and strided targets.
#[test]
fn strided_views() {
    let (rows, vocab, stride) = (11u32, 257u32, 300u64);
    let values = random_logits(9, rows as usize * stride as usize, 4.0);
    let ids = random_targets(9, rows as usize * 3, vocab);
    for ctx in contexts() {
        for dtype in DType::ALL {
            let logits = Logits::from_f32(dtype, &values);
            let all = logits.values();
            let got = run_views(ctx, logits.bytes(), &ids, 1.0, |x, y| {
                (
                    LogitsView::new(x, dtype, rows, vocab).with_row_stride(stride),
                    TargetsView::new(y)
                        .with_byte_offset(8)
                        .unwrap()
                        .with_row_stride(3),
                )
            })
            .unwrap();
            let x: Vec<f64> = (0..rows as usize)
                .flat_map(|r| {
                    all[r * stride as usize..r * stride as usize + vocab as usize].to_vec()
                })
                .collect();
            let t: Vec<u32> = (0..rows as usize).map(|r| ids[2 + 3 * r]).collect();
            compare(ctx, &format!("{dtype} strided"), &got, &x, vocab, &t, 1.0);
        }
    }
}

/// The same call twice gives the same bits, and a row's bits do not depend on the
/// other rows of the dispatch nor on its position in it.
#[test]
fn bitwise_determinism_and_batch_invariance() {
    let (rows, vocab) = (64usize, 32000u32);
    let x = random_logits(21, rows * vocab as usize, 3.0);
    let targets = random_targets(21, rows, vocab);
    for ctx in contexts() {
        for dtype in DType::ALL {
            let logits = Logits::from_f32(dtype, &x);
            let a = ctx.row_stats(logits.host(), vocab, &targets, 0.9).unwrap();
            let b = ctx.row_stats(logits.host(), vocab, &targets, 0.9).unwrap();
            assert_eq!(bits(&a), bits(&b), "{} {dtype}: two runs differ", name(ctx));
            for r in [0usize, 1, 37, 63] {
                let v = vocab as usize;
                let one = Logits::from_f32(dtype, &x[r * v..(r + 1) * v]);
                let alone = ctx
                    .row_stats(one.host(), vocab, &targets[r..r + 1], 0.9)
                    .unwrap();
                assert_eq!(
                    bits(&alone)[0],
                    bits(&a)[r],
                    "{} {dtype}: row {r} alone differs from row {r} of 64",
                    name(ctx)
                );
            }
        }
    }
}

/// The native paths (f16 loads, subgroup reductions) give the same bits as the fallback
/// on every adapter that has them: each path the adapter offers, alone and together,
/// forced with `with_paths`, in every dtype whose module it changes (f16 loads change
/// only the module of f16 logits; subgroups every one). On CI lavapipe (Vulkan) has
/// both; llvmpipe (GL) has neither, so its native path is the fallback and it has
/// nothing to compare. With no adapter that has one the test fails, naming them.
#[test]
fn native_paths_match_fallback_bitwise() {
    let (rows, vocab) = (16usize, 50257u32);
    let x = random_logits(33, rows * vocab as usize, 3.0);
    let targets = random_targets(33, rows, vocab);
    let mut tally = Tally::new("(native path, dtype) pairs bitwise equal to the fallback");
    for ctx in natives() {
        let fallback = ctx.with_paths(Paths::FALLBACK);
        let have = ctx.available_paths();
        if have == Paths::FALLBACK {
            tally.skip(
                ctx,
                "no native path (neither SHADER_F16 nor SUBGROUP usable)",
            );
            continue;
        }
        for (shader_f16, subgroups) in [(true, false), (false, true), (true, true)] {
            if (shader_f16 && !have.shader_f16) || (subgroups && !have.subgroups) {
                continue;
            }
            let paths = Paths {
                shader_f16,
                subgroups,
            };
            let native = ctx.with_paths(paths);
            assert_eq!(native.paths(), paths, "{}", name(ctx));
            for dtype in DType::ALL {
                if module(&native, dtype) == module(&fallback, dtype) {
                    continue; // the same module: equal bits would prove nothing
                }
                let logits = Logits::from_f32(dtype, &x);
                let got = native
                    .row_stats(logits.host(), vocab, &targets, 1.0)
                    .unwrap_or_else(|e| panic!("{} {dtype}: {e}", name(&native)));
                let want = fallback
                    .row_stats(logits.host(), vocab, &targets, 1.0)
                    .unwrap();
                assert_eq!(bits(&got), bits(&want), "{} {dtype}", name(&native));
                tally.count(&native, 1);
            }
        }
    }
    tally.finish();
}

/// The WGSL of the row kernel `ctx` runs on `dtype` logits (rows read one at a time).
fn module(ctx: &Context, dtype: DType) -> String {
    wgpu_policy_loss::PipelineKey {
        kernel: wgpu_policy_loss::Kernel::RowStats,
        logits: dtype,
        grad: wgpu_policy_loss::GradOut::None,
        paths: ctx.paths(),
        quad: false,
        grad_quad: false,
        lane_blocks: ctx.lane_blocks(),
        sampler: wgpu_policy_loss::SamplerMap::Off,
    }
    .source()
}

#[test]
fn bad_input_is_an_error() {
    let ctx = &contexts()[0];
    let x = vec![0.5f32; 3 * 10];
    let h = wgpu_policy_loss::HostLogits::F32(&x);
    let err = ctx.row_stats(h, 10, &[1, 10, 2], 1.0).unwrap_err();
    assert!(
        matches!(
            err,
            wgpu_policy_loss::Error::TargetOutOfRange {
                row: 1,
                id: 10,
                vocab: 10
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("targets") && err.to_string().contains("row 1"));
    for tau in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let err = ctx.row_stats(h, 10, &[1, 2, 3], tau).unwrap_err();
        assert!(err.to_string().contains("temperature"), "{err}");
    }
    let err = ctx.row_stats(h, 7, &[1, 2, 3], 1.0).unwrap_err();
    assert!(err.to_string().contains("logits"), "{err}");
    let err = ctx.row_stats(h, 10, &[1, 2], 1.0).unwrap_err();
    assert!(err.to_string().contains("targets"), "{err}");
    // a view past the end of its buffer
    let err = run_views(ctx, bytemuck::cast_slice(&x), &[1, 2, 3], 1.0, |b, y| {
        (LogitsView::new(b, DType::F32, 4, 10), TargetsView::new(y))
    })
    .unwrap_err();
    assert!(err.to_string().contains("logits"), "{err}");
}

#[test]
fn max_error_report() {
    // Prints the max error per adapter, path and dtype (run with --nocapture); the
    // README's table comes from here. Every comparison is also held to the tolerance.
    for ctx in contexts() {
        for dtype in DType::ALL {
            let mut worst = [MaxErr::default(); 3];
            for (i, &(vocab, scale, tau)) in [
                (151936u32, 4.0f32, 1.0f32),
                (32000, 10.0, 0.7),
                (4099, 2.0, 1.3),
            ]
            .iter()
            .enumerate()
            {
                let rows = 8;
                let seed = 100 + i as u64;
                let logits =
                    Logits::from_f32(dtype, &random_logits(seed, rows * vocab as usize, scale));
                let e = check(ctx, &logits, vocab, &random_targets(seed, rows, vocab), tau);
                for k in 0..3 {
                    if e[k].abs > worst[k].abs {
                        worst[k] = e[k];
                    }
                }
            }
            println!(
                "max |gpu - ref|  {:<52} {:<5} lse {:.1e}  logp {:.1e}  entropy {:.1e}",
                name(ctx),
                dtype,
                worst[0].abs,
                worst[1].abs,
                worst[2].abs
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random shapes, scales, temperatures, dtypes and -inf sprinkles, on every context.
    #[test]
    fn random_shapes_and_values(
        rows in 1usize..40,
        vocab in 1u32..3000,
        scale in prop_oneof![Just(0.0f32), 0.01f32..1.0, 1.0f32..50.0, Just(1e4f32)],
        tau in prop_oneof![Just(1.0f32), 0.1f32..4.0],
        dtype in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::Bf16)],
        seed in any::<u64>(),
        neg_inf_every in prop_oneof![Just(0usize), 2usize..50],
    ) {
        let mut x = random_logits(seed, rows * vocab as usize, scale);
        if neg_inf_every > 0 {
            for (i, v) in x.iter_mut().enumerate() {
                // keep entry 0 of each row finite so no row is all -inf
                if i % neg_inf_every == 1 && i % vocab as usize != 0 {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        let targets: Vec<u32> = random_targets(seed, rows, vocab)
            .into_iter()
            .map(|y| if neg_inf_every > 0 { 0 } else { y })
            .collect();
        let logits = Logits::from_f32(dtype, &x);
        for ctx in contexts() {
            check(ctx, &logits, vocab, &targets, tau);
        }
    }
}

/// The other lane layout (strided lanes on CPU adapters, blocks on GPUs): what a GPU
/// runs, checked on CI's CPU adapters too.
#[test]
fn the_other_lane_layout() {
    for (vocab, rows) in [(151_936u32, 3usize), (4099, 9), (32, 17)] {
        for dtype in DType::ALL {
            let logits = Logits::from_f32(
                dtype,
                &random_logits(vocab as u64, rows * vocab as usize, 4.0),
            );
            let targets = random_targets(vocab as u64, rows, vocab);
            for ctx in contexts() {
                let other = ctx.with_lane_blocks(!ctx.lane_blocks());
                check(&other, &logits, vocab, &targets, 0.8);
            }
        }
    }
}

/// Pipelines are built once per device and path, then reused. On fresh devices: the
/// shared `contexts()` build pipelines in every test that runs beside this one.
#[test]
fn pipelines_are_cached() {
    let x = vec![0.25f32; 4 * 9];
    let h = wgpu_policy_loss::HostLogits::F32(&x);
    for native in opened() {
        // a fresh device builds one pipeline for the call; the fallback shares its
        // cache and builds one more, unless the fallback is the native path
        for ctx in [native.clone(), native.with_paths(Paths::FALLBACK)] {
            let before = ctx.pipeline_count();
            ctx.row_stats(h, 9, &[0, 1, 2, 3], 1.0).unwrap();
            let built = ctx.pipeline_count();
            let expect = before + usize::from(before == 0 || ctx.paths() != native.paths());
            assert_eq!(built, expect, "{}: first call", name(&ctx));
            for tau in [0.5, 2.0, 1.0] {
                ctx.row_stats(h, 9, &[3, 2, 1, 0], tau).unwrap();
            }
            assert_eq!(ctx.pipeline_count(), built, "{}: later calls", name(&ctx));
        }
    }
}
