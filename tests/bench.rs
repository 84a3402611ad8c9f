//! The benchmark's baseline computes what the library computes (so the speed-up
//! compares equal work), on every adapter.

mod common;

use common::*;
use wgpu_policy_loss::tools::bench::{BenchShape, Workload};
use wgpu_policy_loss::{Context, DType};

#[test]
fn unfused_baseline_agrees_with_the_fused_loss() {
    for ctx in contexts() {
        for dtype in [DType::F32, DType::Bf16] {
            // 300 rows with a 16 × 16 grid elsewhere; here odd V and several chunks' worth
            let w = Workload::new(
                ctx,
                BenchShape {
                    rows: 300,
                    vocab: 1001,
                    dtype,
                },
            )
            .unwrap();
            let (loss_diff, grad_diff) = w.compare().unwrap();
            assert!(
                loss_diff < 1e-5,
                "{} {dtype}: loss differs by {loss_diff}",
                name(ctx)
            );
            // the gradient's scale is 1/T; bf16 rounding is 2^-8 relative
            assert!(
                grad_diff < 2e-5,
                "{} {dtype}: gradient differs by {grad_diff}",
                name(ctx)
            );
        }
    }
}

/// Logits larger than the device's largest buffer (1 MiB here) are held in parts, one
/// loss over them: the loss of one buffer, bit for bit; the baseline runs in chunks of
/// rows whose f32 intermediates fit.
#[test]
fn shapes_larger_than_one_buffer_run_as_parts() {
    for full in opened() {
        let a = full.adapter().unwrap();
        let small = Context::from_adapter_with_limits(
            a,
            wgpu_policy_loss::wgpu::Limits {
                max_buffer_size: 1 << 20,
                max_storage_buffer_binding_size: 1 << 20,
                ..a.limits()
            },
        )
        .unwrap();
        for dtype in [DType::F32, DType::Bf16] {
            // 1.2 MB of bf16, 2.4 MB of f32
            let shape = BenchShape {
                rows: 100,
                vocab: 6001,
                dtype,
            };
            let parted = Workload::new(&small, shape).unwrap();
            let one = Workload::new(&full, shape).unwrap();
            let what = format!("{} {dtype}", name(&full));
            assert!(parted.parts() >= 2 && one.parts() == 1, "{what}");
            assert_eq!(
                parted.fused_loss().unwrap().to_bits(),
                one.fused_loss().unwrap().to_bits(),
                "{what}"
            );
            assert!(parted.has_unfused(), "{what}");
            let mut enc = small.device().create_command_encoder(&Default::default());
            parted.record_unfused(&mut enc).unwrap();
            parted.record_copy_kernel(&mut enc).unwrap();
            parted.record_row_stats(&mut enc).unwrap();
            small.submit_and_wait(enc).unwrap();
        }
    }
}
