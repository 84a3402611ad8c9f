//! Memory: a call allocates O(rows) scratch, never O(rows × V), and exactly what
//! `PolicyLoss::scratch_bytes` reports before the call bounds it. Every buffer the
//! library creates is counted by `Context::allocations`.

mod common;

use common::*;
use wgpu_policy_loss::{
    Advantages, DType, F32View, GradView, Gradient, LogitsView, LossBuffers, LossConfig,
    LossInputs, PolicyLoss, PolicyLossMode, TargetsView,
};

/// Records one forward + backward over `parts` buffers of logits (of `rows` rows in
/// all) and returns (bytes the library allocated during the call, buffers, what
/// scratch_bytes promised), for two successive calls on the same PolicyLoss.
fn measure(
    ctx: &wgpu_policy_loss::Context,
    mode: PolicyLossMode,
    rows: u32,
    vocab: u32,
    in_place: bool,
    parts: u32,
) -> [(u64, u64, u64); 2] {
    let n = rows / parts;
    let bufs: Vec<_> = (0..parts)
        .map(|_| {
            (
                ctx.upload("x", &vec![0u8; (n * vocab * 2) as usize]),
                ctx.upload("y", &vec![0u8; n as usize * 4]),
                ctx.upload("m", bytemuck::cast_slice(&vec![1.0f32; n as usize])),
                ctx.upload("a", bytemuck::cast_slice(&vec![0.5f32; n as usize])),
                ctx.upload("g", &vec![0u8; (n * vocab * 2) as usize]),
            )
        })
        .collect();
    let out = LossBuffers::new(ctx, rows);
    let loss = PolicyLoss::new(
        ctx,
        LossConfig {
            mode,
            dro_beta: Some(0.3),
            ..LossConfig::default()
        },
    )
    .unwrap();
    let inputs: Vec<_> = bufs
        .iter()
        .map(|(x, y, m, a, g)| {
            let logits =
                LogitsView::new(x, DType::Bf16, n, vocab).with_sequences(16, 16 * vocab as u64);
            let inputs = LossInputs::new(
                logits,
                TargetsView::new(y),
                F32View::new(m),
                Advantages::PerToken(F32View::new(a)),
            );
            let gradient = if in_place {
                Gradient::InPlace
            } else {
                Gradient::Into(GradView::like(g, DType::Bf16, &logits))
            };
            (inputs, gradient)
        })
        .collect();
    let promised = loss.scratch_bytes_parts(&inputs).unwrap();
    if parts == 1 {
        assert_eq!(
            promised,
            loss.scratch_bytes(&inputs[0].0, &inputs[0].1).unwrap()
        );
    }
    let mut got = [(0, 0, 0); 2];
    for slot in &mut got {
        let before = ctx.allocations();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        loss.record_parts(&mut enc, &inputs, &out.outputs())
            .unwrap();
        ctx.queue().submit([enc.finish()]);
        let after = ctx.allocations();
        *slot = (
            after.bytes - before.bytes,
            after.buffers - before.buffers,
            promised,
        );
    }
    got
}

#[test]
fn scratch_is_o_rows_and_bounded_by_scratch_bytes() {
    let rows = 64;
    // fresh devices: allocations are counted per device, and the shared contexts()
    // allocate in any test that runs beside this one
    for ctx in &opened() {
        for (mode, in_place, parts) in PolicyLossMode::ALL
            .into_iter()
            .flat_map(|m| [(m, false, 1), (m, true, 1), (m, false, 2)])
        {
            let small = measure(ctx, mode, rows, 1000, in_place, parts);
            let large = measure(ctx, mode, rows, 60_000, in_place, parts);
            let what = format!("{} {mode:?} in_place={in_place} parts={parts}", name(ctx));
            // up to five scratch buffers and one uniform buffer per launch: each part
            // its own launches but reduce, then the weights (several parts) and reduce
            let loss = PolicyLoss::new(
                ctx,
                LossConfig {
                    mode,
                    dro_beta: Some(0.3),
                    ..LossConfig::default()
                },
            )
            .unwrap();
            let per_part = loss.launches_for(false) as u64 - 1;
            let launches = parts as u64 * per_part + u64::from(parts > 1) + 1;
            for (bytes, buffers, promised) in small.iter().chain(&large) {
                assert!(
                    bytes <= promised,
                    "{what}: allocated {bytes} > scratch_bytes {promised}"
                );
                assert!(
                    *buffers <= 5 + launches,
                    "{what}: {buffers} buffers for one call"
                );
            }
            // the same rows allocate the same, whatever V
            assert_eq!(small[0].0, large[0].0, "{what}: allocation grows with V");
            // O(rows): 48 bytes a row and a few uniform blocks, far below rows × V
            assert!(
                small[0].0 < rows as u64 * 48 + 4096,
                "{what}: {:?}",
                small[0]
            );
            // the second call reuses the scratch: only uniform blocks
            assert!(
                small[1].0 < 2048,
                "{what}: second call allocated {}",
                small[1].0
            );
        }
    }
}

/// The figures for the issues' shapes, before any call (run with --nocapture):
/// T = 4096 and T = 16384, V = 151936, bf16, forward + backward into a bf16 gradient
/// and in place, one sequence of 1024 rows per response.
#[test]
fn scratch_for_a_real_batch() {
    for ctx in contexts() {
        for mode in [PolicyLossMode::PpoClip, PolicyLossMode::Gspo] {
            let loss = PolicyLoss::new(
                ctx,
                LossConfig {
                    mode,
                    dro_beta: Some(0.3),
                    ..LossConfig::default()
                },
            )
            .unwrap();
            for rows in [4096u32, 16384] {
                let sep = loss
                    .scratch_bytes_dense(rows, 1024, 151_936, DType::Bf16, Some(DType::Bf16))
                    .unwrap();
                let inp = loss
                    .scratch_bytes_dense(rows, 1024, 151_936, DType::Bf16, None)
                    .unwrap();
                println!(
                    "scratch  {:<52} {mode:?} T={rows}: {sep} bytes (bf16 gradient buffer), {inp} bytes (in place); logits are {} bytes",
                    name(ctx),
                    rows as u64 * 151_936 * 2
                );
                assert!(sep < rows as u64 * 48 + 16 * 8 + 64 * 1024);
            }
        }
    }
}

/// The fused head allocates what `scratch_bytes_head` promised at most, which does
/// not grow with the rows beyond the loss's O(rows) scratch; and at Qwen2.5-0.5B's head
/// (4096 × 151936, H = 896) it is at most an eighth of the unfused path's extra memory
/// (the f32 logits, their gradient in place, and the loss's scratch).
#[test]
fn the_head_holds_one_chunk_of_logits() {
    use wgpu_policy_loss::{HeadGradients, HeadInputs, MatrixView};
    for ctx in &opened() {
        let loss = PolicyLoss::new(ctx, LossConfig::default()).unwrap();
        let (v, h) = (3000u32, 64u32);
        let mut promised_for = Vec::new();
        for rows in [200u32, 800] {
            let buf = |n: u64| ctx.upload("t", &vec![0u8; n as usize]);
            let (hid, w) = (
                buf(rows as u64 * h as u64 * 2),
                buf(v as u64 * h as u64 * 2),
            );
            let (y, m, a) = (
                buf(rows as u64 * 4),
                buf(rows as u64 * 4),
                buf(rows as u64 * 4),
            );
            let (gh, gw) = (
                buf(rows as u64 * h as u64 * 4),
                buf(v as u64 * h as u64 * 2),
            );
            let inputs = HeadInputs::new(
                MatrixView::new(&hid, DType::Bf16, rows, h),
                MatrixView::new(&w, DType::Bf16, v, h),
                TargetsView::new(&y),
                F32View::new(&m),
                Advantages::PerToken(F32View::new(&a)),
            )
            .with_chunk_rows(96);
            let grads = HeadGradients {
                hidden: Some(MatrixView::new(&gh, DType::F32, rows, h)),
                lm_head: Some(MatrixView::new(&gw, DType::Bf16, v, h).into()),
            };
            let promised = loss.scratch_bytes_head(&inputs, &grads).unwrap();
            let out = LossBuffers::new(ctx, rows);
            let before = ctx.allocations();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            loss.record_head(&mut enc, &inputs, &grads, &out.outputs())
                .unwrap();
            ctx.queue().submit([enc.finish()]);
            let used = ctx.allocations().bytes - before.bytes;
            assert!(used <= promised, "{}: {used} > {promised}", name(ctx));
            promised_for.push(promised);
        }
        // 600 more rows: the O(rows) scratch (at most 256 bytes a row), no more logits
        let grew = promised_for[1] - promised_for[0];
        assert!(
            grew <= 600 * 256,
            "{}: {grew} bytes for 600 rows",
            name(ctx)
        );
        let (t, v, h) = (4096u32, 151_936u32, 896u32);
        let fused = loss
            .scratch_bytes_head_dense((t, t), (v, h), DType::Bf16, Some(DType::F32), None)
            .unwrap();
        let unfused =
            t as u64 * v as u64 * 4 + loss.scratch_bytes_dense(t, t, v, DType::F32, None).unwrap();
        assert!(
            8 * fused <= unfused,
            "{}: fused {fused}, unfused {unfused}",
            name(ctx)
        );
        eprintln!(
            "{}: head extra memory {fused} B, unfused {unfused} B",
            name(ctx)
        );
    }
}
