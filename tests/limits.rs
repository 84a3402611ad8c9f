//! Scale: rows split into chunks when the logits exceed one storage binding or the
//! rows exceed the dispatch grid, with results identical bit for bit to one unchunked
//! dispatch; more than 65,535 rows; a row larger than a binding split into column
//! blocks.

mod common;

use common::*;
use wgpu_policy_loss::{
    Context, DType, Gradient, HostLogits, KlEstimator, LogitsView, LossAggMode, LossConfig, Paths,
    PolicyLossMode, TargetsView,
};

const SMALL_BINDING: u64 = 1 << 20;

/// Every adapter twice: with its own limits, and with a 1 MiB storage binding and a
/// 16 × 16 dispatch grid, so that chunking runs on lavapipe too.
fn pairs() -> Vec<(Context, Context)> {
    opened()
        .into_iter()
        .map(|full| {
            let a = full.adapter().expect("opened on an adapter");
            let small = Context::from_adapter_with_limits(
                a,
                wgpu_policy_loss::wgpu::Limits {
                    max_storage_buffer_binding_size: SMALL_BINDING,
                    max_compute_workgroups_per_dimension: 16,
                    ..a.limits()
                },
            )
            .unwrap_or_else(|e| panic!("{}: {e}", name(&full)));
            (full, small)
        })
        .flat_map(|(full, small)| {
            let fb = (
                full.with_paths(Paths::FALLBACK),
                small.with_paths(Paths::FALLBACK),
            );
            [(full, small), fb]
        })
        .collect()
}

#[test]
fn chunked_loss_equals_unchunked_bitwise() {
    // 600 rows of V = 4099: 16 KiB per f32 row, so ~64 rows a chunk under 1 MiB, and
    // at most 256 rows a chunk on the 16 × 16 grid
    let case = LossCase::new(31, 6, 100, 4099);
    for (full, small) in pairs() {
        for mode in PolicyLossMode::ALL {
            for (dtype, grad) in [
                (DType::F32, DType::F32),
                (DType::Bf16, DType::Bf16),
                (DType::F16, DType::F32),
            ] {
                let c = LossConfig {
                    mode,
                    loss_agg_mode: LossAggMode::SeqMeanTokenMean,
                    kl_loss_type: KlEstimator::K3,
                    kl_coef: 0.1,
                    entropy_coeff: 0.01,
                    temperature: 0.8,
                    dro_beta: Some(0.3),
                    ..LossConfig::default()
                };
                let logits = Logits::from_f32(dtype, &case.logits);
                let batch = case.batch(logits.host(), ALL_INPUTS);
                let a = full.policy_loss(&c, &batch, Some(grad)).unwrap();
                let b = small
                    .policy_loss(&c, &batch, Some(grad))
                    .unwrap_or_else(|e| panic!("{}: {e}", name(&small)));
                let what = format!("{} {mode:?} {dtype}", name(&full));
                assert_eq!(a.metrics.loss.to_bits(), b.metrics.loss.to_bits(), "{what}");
                assert_eq!(a.grad, b.grad, "{what}: gradient");
                assert_eq!(f32_bits(&a.logprobs), f32_bits(&b.logprobs), "{what}");
                assert_eq!(f32_bits(&a.entropy), f32_bits(&b.entropy), "{what}");
            }
        }
    }
}

/// The default loss over `[rows, vocab]` logits with the gradient in their own buffer:
/// over them, or (`beside`) right after them; returns the buffer as it ends up.
fn gradient_in_logits_buffer(
    ctx: &Context,
    logits: &Logits,
    dtype: DType,
    vocab: u32,
    targets: &[u32],
    beside: bool,
) -> wgpu_policy_loss::Result<Vec<u8>> {
    use wgpu_policy_loss::{Advantages, F32View, GradView, LossBuffers, LossInputs, PolicyLoss};
    let rows = targets.len() as u32;
    let n = logits.bytes().len();
    let mut bytes = logits.bytes().to_vec();
    if beside {
        bytes.resize(2 * n, 0);
    }
    let xb = ctx.upload("logits", &bytes);
    let yb = ctx.upload("y", bytemuck::cast_slice(targets));
    let mb = ctx.upload("m", bytemuck::cast_slice(&vec![1.0f32; rows as usize]));
    let ab = ctx.upload("a", bytemuck::cast_slice(&[0.7f32]));
    let out = LossBuffers::new(ctx, rows);
    let view = LogitsView::new(&xb, dtype, rows, vocab);
    let advantages = Advantages::PerSequence(F32View::new(&ab));
    let inputs = LossInputs::new(view, TargetsView::new(&yb), F32View::new(&mb), advantages);
    let gradient = if beside {
        let mut g = GradView::like(&xb, dtype, &view);
        g.layout.offset = (rows * vocab) as u64;
        Gradient::Into(g)
    } else {
        Gradient::InPlace
    };
    let loss = PolicyLoss::new(ctx, LossConfig::default())?;
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    loss.record(&mut enc, &inputs, gradient, &out.outputs())?;
    Ok(ctx.read_back(enc, &[(&xb, bytes.len() as u64)])?.remove(0))
}

#[test]
fn chunked_in_place_and_row_stats_equal_unchunked() {
    let (rows, vocab) = (300u32, 2049u32); // odd V: 16-bit rows share words at edges
    let x = random_logits(32, (rows * vocab) as usize, 3.0);
    let targets = random_targets(32, rows as usize, vocab);
    for (full, small) in pairs() {
        for dtype in DType::ALL {
            let logits = Logits::from_f32(dtype, &x);
            let a = full.row_stats(logits.host(), vocab, &targets, 1.0).unwrap();
            let b = small
                .row_stats(logits.host(), vocab, &targets, 1.0)
                .unwrap();
            assert_eq!(bits(&a), bits(&b), "{} {dtype}: row_stats", name(&full));
            // the loss with the gradient written over the logits
            let run = |ctx: &Context| {
                gradient_in_logits_buffer(ctx, &logits, dtype, vocab, &targets, false).unwrap()
            };
            assert_eq!(run(&full), run(&small), "{} {dtype}: in place", name(&full));
        }
    }
}

/// A gradient beside the logits in their own buffer (as Burn's allocator places them) is
/// bound with the logits in one read-write window: chunks then split only the grid, and
/// a pair larger than one binding is an error naming the gradient.
#[test]
fn gradient_beside_the_logits_chunked_by_the_grid() {
    // 300 rows > the 256 of a 16 × 16 grid; [logits | gradient] is 1.2 MB in f32 (over
    // the small 1 MiB binding) and 618 KB in 16 bits (under it)
    let (rows, vocab) = (300u32, 515u32);
    let x = random_logits(34, (rows * vocab) as usize, 3.0);
    let targets = random_targets(34, rows as usize, vocab);
    let run = |ctx: &Context, logits: &Logits, dtype: DType| {
        gradient_in_logits_buffer(ctx, logits, dtype, vocab, &targets, true)
    };
    for (full, small) in pairs() {
        for dtype in DType::ALL {
            let logits = Logits::from_f32(dtype, &x);
            let what = format!("{} {dtype}", name(&full));
            let a = run(&full, &logits, dtype).unwrap_or_else(|e| panic!("{what}: {e}"));
            match (dtype, run(&small, &logits, dtype)) {
                (DType::F32, Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains("gradient") && msg.contains("binds"), "{msg}");
                }
                (DType::F32, Ok(_)) => panic!("{what}: 1.2 MB bound under a 1 MiB limit"),
                (_, Ok(b)) => assert_eq!(a, b, "{what}: chunked by the grid"),
                (_, Err(e)) => panic!("{what}: {e}"),
            }
        }
    }
}

/// Full-sequence [B, S, V] logits with the shift, chunked: sequences split across chunks.
#[test]
fn chunked_shifted_views() {
    let (b, s, v) = (5u32, 70u32, 1500u32);
    let x = random_logits(33, (b * s * v) as usize, 2.0);
    let ids = random_targets(33, (b * s) as usize, v);
    for (full, small) in pairs() {
        let run = |ctx: &Context| {
            let xb = ctx.upload("x", bytemuck::cast_slice(&x));
            let yb = ctx.upload("y", bytemuck::cast_slice(&ids));
            let rows = b * (s - 1);
            let out = wgpu_policy_loss::RowStatsBuffers::new(ctx, rows);
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            ctx.record_row_stats(
                &mut enc,
                &LogitsView::shifted(&xb, DType::F32, b, s, v),
                &TargetsView::shifted(&yb, s),
                1.0,
                &out.outputs(),
            )
            .unwrap();
            ctx.read_f32s(enc, &[&out.lse, &out.logp, &out.entropy], rows as usize)
                .unwrap()
        };
        let (a, c) = (run(&full), run(&small));
        for k in 0..3 {
            assert_eq!(f32_bits(&a[k]), f32_bits(&c[k]), "{}", name(&full));
        }
    }
}

/// A row larger than one binding (V = 300,000 f32 and 600,000 bf16 under 1 MiB, an
/// error before) is split into column blocks whose statistics are merged: row_stats
/// matches the f64 reference (the loss: tests/shards.rs).
#[test]
fn a_row_larger_than_a_binding_is_split_into_column_blocks() {
    for (dtype, vocab) in [(DType::F32, 300_000u32), (DType::Bf16, 600_000)] {
        let rows = 3usize;
        let l = Logits::from_f32(dtype, &random_logits(35, rows * vocab as usize, 3.0));
        // the first column, one in the middle, the last one
        let targets = [0, vocab / 2 + 1, vocab - 1];
        let x = l.values();
        for (_, small) in pairs() {
            let got = small
                .row_stats(l.host(), vocab, &targets, 0.7)
                .unwrap_or_else(|e| panic!("{} {dtype}: {e}", name(&small)));
            for (r, &y) in targets.iter().enumerate() {
                let row = &x[r * vocab as usize..(r + 1) * vocab as usize];
                let want = wgpu_policy_loss::reference::row_stats(row, y as usize, 0.7);
                let what = format!("{} {dtype} row {r}", name(&small));
                close(got.lse[r], want.lse, tolerance(want.lse.abs()))
                    .unwrap_or_else(|e| panic!("{what}: lse: {e}"));
                close(got.logp[r], want.logp, tolerance(want.logp.abs() + 10.0))
                    .unwrap_or_else(|e| panic!("{what}: logp: {e}"));
                close(got.entropy[r], want.entropy, tolerance(10.0))
                    .unwrap_or_else(|e| panic!("{what}: entropy: {e}"));
            }
        }
    }
}

/// An adapter that cuts a shader's loops short (Mesa's llvmpipe and lavapipe stop
/// after 65,535 iterations in all and go on with the partial sums): a row whose sweep
/// would loop longer in one lane is split into column blocks, by row_stats and by the
/// loss, never cut short (a bf16 row of 2^26 - 1024 elements gave lse 14.46 instead
/// of 18.61 there, silently, before rows were checked); a row that fits runs and is
/// right. Adapters without such a cap split only what a binding cannot hold.
#[test]
fn rows_longer_than_the_adapters_loops_are_split() {
    use wgpu_policy_loss::{
        half::bf16, Advantages, F32View, LossBuffers, LossInputs, PolicyLoss, RowStatsBuffers,
    };
    for ctx in &opened() {
        let limits = ctx.device().limits();
        // the largest bf16 and f32 rows one binding holds, in whole quads
        let bytes = limits.max_storage_buffer_binding_size.min(1 << 28) / 16 * 16;
        let storage = wgpu_policy_loss::wgpu::BufferUsages::STORAGE;
        let x = ctx.buffer("x", bytes, storage);
        let small = ctx.upload("small", &[0u8; 64]);
        let stats = RowStatsBuffers::new(ctx, 1);
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let bf16_row = LogitsView::new(&x, DType::Bf16, 1, (bytes / 2) as u32);
        let r = ctx.record_row_stats(
            &mut enc,
            &bf16_row,
            &TargetsView::new(&small),
            1.0,
            &stats.outputs(),
        );
        // f32: sweep 1 and the in-place gradient sweep, a quad a step each
        let f32_row = LogitsView::new(&x, DType::F32, 1, (bytes / 4) as u32);
        let inputs = LossInputs::new(
            f32_row,
            TargetsView::new(&small),
            F32View::new(&small),
            Advantages::PerToken(F32View::new(&small)),
        );
        let loss = PolicyLoss::new(ctx, LossConfig::default()).unwrap();
        let out = LossBuffers::new(ctx, 1);
        let l = loss.record(&mut enc, &inputs, Gradient::InPlace, &out.outputs());
        // both split such a row into column blocks (whose numbers tests/shards.rs and
        // the test above check)
        for (what, r) in [("row_stats", r), ("the policy loss", l)] {
            if let Err(e) = r {
                panic!("{}: {what} of a long row: {e}", name(ctx));
            }
        }
        // half that row (2^25 bf16 on lavapipe) still runs, and right
        let v = (bytes / 4).min(1 << 25) as usize;
        let host: Vec<bf16> = (0..v)
            .map(|i| bf16::from_f32((i.wrapping_mul(2_654_435_761) % 1000) as f32 / 250.0 - 2.0))
            .collect();
        let got = ctx
            .row_stats(HostLogits::Bf16(&host), v as u32, &[5], 1.0)
            .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
        let row: Vec<f64> = host.iter().map(|h| h.to_f64()).collect();
        let want = wgpu_policy_loss::reference::row_stats(&row, 5, 1.0);
        close(got.lse[0], want.lse, tolerance(want.lse.abs()))
            .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    }
}

#[test]
fn more_rows_than_one_grid_dimension() {
    let (rows, vocab) = (70_000usize, 8u32);
    let x = random_logits(34, rows * vocab as usize, 2.0);
    let targets = random_targets(34, rows, vocab);
    let mask: Vec<f32> = (0..rows).map(|i| (i % 3 != 0) as u8 as f32).collect();
    let adv: Vec<f32> = (0..rows).map(|i| ((i % 7) as f32 - 3.0) / 3.0).collect();
    for ctx in contexts() {
        let got = ctx
            .row_stats(HostLogits::F32(&x), vocab, &targets, 1.0)
            .unwrap();
        let want = wgpu_policy_loss::reference::row_stats_batch(&x, vocab as usize, &targets, 1.0);
        for r in [0, 1, 65_534, 65_535, 65_536, rows - 1] {
            close(got.logp[r], want[r].logp, 1e-5)
                .unwrap_or_else(|e| panic!("{} row {r}: {e}", name(ctx)));
        }
        let c = LossConfig {
            mode: PolicyLossMode::Reinforce,
            ..LossConfig::default()
        };
        let out = ctx
            .policy_loss(
                &c,
                &wgpu_policy_loss::HostBatch {
                    kept: None,
                    temperatures: None,
                    logits: HostLogits::F32(&x),
                    vocab,
                    rows_per_seq: Some(100),
                    targets: &targets,
                    mask: &mask,
                    advantages: &adv,
                    old_logprobs: None,
                    ref_logprobs: None,
                },
                Some(DType::F32),
            )
            .unwrap();
        let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let xs = f(&x);
        let want = wgpu_policy_loss::reference::policy_loss(
            &c,
            &wgpu_policy_loss::reference::Batch {
                logits: &xs,
                vocab: vocab as usize,
                rows_per_seq: 100,
                targets: &targets,
                mask: &f(&mask),
                advantages: &f(&adv),
                old_logp: None,
                ref_logp: None,
            },
        )
        .unwrap();
        close(out.metrics.loss, want.loss, 1e-5 * (1.0 + want.loss.abs())).unwrap();
        let g = out.grad.unwrap().to_f32();
        for r in [0, 65_535, 65_536, rows - 1] {
            for j in 0..vocab as usize {
                let i = r * vocab as usize + j;
                close(g[i], want.grad[i], 1e-9)
                    .unwrap_or_else(|e| panic!("{} grad[{r},{j}]: {e}", name(ctx)));
            }
        }
    }
}

/// Logits above 2 GiB (bf16, 8192 × 151936 = 2.3 GiB) where the device's buffers allow
/// it: a real GPU; lavapipe and llvmpipe cap a buffer at 2 GiB. Run where such a device
/// is (`cargo test --release --test limits -- --ignored`, or scripts/gpu-report.sh):
/// there it must compare rows on at least one adapter, and it fails when none holds
/// the logits.
#[test]
#[ignore = "needs a device whose buffers hold 2.3 GiB (lavapipe and llvmpipe cap them at 2 GiB); fails where none does"]
fn logits_above_two_gib() {
    let (rows, vocab) = (8192u32, 151_936u32);
    let bytes = rows as u64 * vocab as u64 * 2;
    let mut tally = Tally::new("rows (lse, logp, entropy) of 2.3 GiB bf16 logits");
    let mut fit = Vec::new();
    for ctx in contexts() {
        match ctx.device().limits().max_buffer_size {
            max if max < bytes => tally.skip(ctx, format!("max_buffer_size {max} B < {bytes} B")),
            _ => fit.push(ctx),
        }
    }
    if fit.is_empty() {
        // fails, naming each adapter's limit, before 2.5 GB of host logits are made
        tally.finish();
        return;
    }
    // a repeating pattern, so the host needs only a few reference rows
    let pattern = random_logits(35, 4 * vocab as usize, 3.0);
    let host: Vec<wgpu_policy_loss::half::bf16> = (0..rows as usize * vocab as usize)
        .map(|i| wgpu_policy_loss::half::bf16::from_f32(pattern[i % pattern.len()]))
        .collect();
    let targets = random_targets(35, rows as usize, vocab);
    // the first rows, the row across byte 2^31 (7067, of 303,872 B a row), the first
    // one past it, and the last
    let checked = [0usize, 1, 4095, 7067, 7068, rows as usize - 1];
    for ctx in fit {
        let got = ctx
            .row_stats(HostLogits::Bf16(&host), vocab, &targets, 1.0)
            .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
        for &r in &checked {
            let row: Vec<f64> = host[r * vocab as usize..(r + 1) * vocab as usize]
                .iter()
                .map(|h| h.to_f64())
                .collect();
            let w = wgpu_policy_loss::reference::row_stats(&row, targets[r] as usize, 1.0);
            // row_stats.rs's tolerance: 2e-5 + 1e-6·max(|lse|, max|z|)
            let zmax = row.iter().fold(0.0f64, |a, &z| a.max(z.abs()));
            let tol = tolerance(w.lse.abs().max(zmax));
            for (label, g, wv) in [
                ("lse", got.lse[r], w.lse),
                ("logp", got.logp[r], w.logp),
                ("entropy", got.entropy[r], w.entropy),
            ] {
                close(g, wv, tol).unwrap_or_else(|e| panic!("{} row {r} {label}: {e}", name(ctx)));
            }
        }
        tally.count(ctx, checked.len());
    }
    tally.finish();
}

/// The 2026 options keep their bits when the rows come in chunks (the sequence pass
/// and the statistics pass included).
#[test]
fn chunked_options_equal_unchunked_bitwise() {
    let case = LossCase::new(37, 4, 80, 4099);
    let logits = Logits::from_f32(DType::Bf16, &case.logits);
    for (full, small) in pairs().into_iter().step_by(2) {
        for (label, c) in options_2026().into_iter().step_by(3) {
            let part = wgpu_policy_loss::HostPart {
                batch: case.batch(logits.host(), ALL_INPUTS),
                rollout_logprobs: Some(&case.rollout[..]),
            };
            let a = full
                .policy_loss_parts(&c, &[part], Some(DType::F32))
                .unwrap();
            let b = small
                .policy_loss_parts(&c, &[part], Some(DType::F32))
                .unwrap_or_else(|e| panic!("{}: {e}", name(&small)));
            let what = format!("{} {label}", name(&full));
            assert!(
                same_bits(&a, &b),
                "{what}:\n{:?}\nvs\n{:?}",
                a.metrics,
                b.metrics
            );
        }
    }
}
