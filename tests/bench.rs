//! The benchmark's baseline computes what the library computes (so the speed-up
//! compares equal work), on every adapter.

mod common;

use common::*;
use wgpu_policy_loss::bench::{BenchShape, Workload};
use wgpu_policy_loss::DType;

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
