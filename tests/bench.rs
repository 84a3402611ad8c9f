//! The benchmark's baseline computes what the library computes (so the speed-up
//! compares equal work), on every adapter.

mod common;

use common::*;
use wgpu_policy_loss::tools::bench::{agree, BenchShape, Workload};
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
            let (loss_diff, grad) = w.compare().unwrap();
            assert!(
                loss_diff < 1e-5,
                "{} {dtype}: loss differs by {loss_diff}",
                name(ctx)
            );
            // every element, by the library's rule for two computed gradients
            grad.unwrap_or_else(|e| panic!("{} {dtype}: gradient {e}", name(ctx)));
        }
    }
}

/// The fused-vs-unfused comparison fails on a NaN or ±Inf in either gradient, and on
/// an error of 1e-3 on an entry at 1e-4 of the largest (no device needed).
#[test]
fn the_baseline_comparison_sees_nan_and_small_entries() {
    let unfused: Vec<f32> = (0..1000)
        .map(|i| 1e-3 * (-(i as f32) / 50.0).exp())
        .collect();
    assert!(agree(&unfused, DType::F32, &unfused).is_ok());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, 500, 999] {
            let mut fused = unfused.clone();
            fused[at] = bad;
            assert!(
                agree(&fused, DType::F32, &unfused).is_err(),
                "{bad} at {at} (fused)"
            );
            assert!(
                agree(&unfused, DType::F32, &fused).is_err(),
                "{bad} at {at} (baseline)"
            );
        }
    }
    // entry 460 is e^-9.2 ≈ 1e-4 of the largest: off by 1e-3 of itself it is out of
    // the two rules' bound (2a·|g| + 2b·max ≈ 5e-8 of the largest), by 1e-5 within
    let mut fused = unfused.clone();
    fused[460] *= 1.001;
    assert!(agree(&fused, DType::F32, &unfused).is_err());
    let mut fused = unfused.clone();
    fused[460] *= 1.0 + 1e-5;
    assert!(agree(&fused, DType::F32, &unfused).is_ok());
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
