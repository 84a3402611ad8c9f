//! The fused row kernel alone (log-sum-exp, target log-prob, entropy), per adapter:
//! one read of the logits. Wall time of record + submit + wait; the throughput line is
//! in bytes of logits read.
//!
//! `cargo bench --bench row_stats`; `WGPU_ADAPTER_NAME=...` to pick one adapter.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wgpu_policy_loss::wgpu;
use wgpu_policy_loss::{Context, DType, LogitsView, RowStatsBuffers, TargetsView};

fn contexts() -> Vec<Context> {
    let all: Vec<Context> = match std::env::var("WGPU_ADAPTER_NAME") {
        Ok(_) => vec![Context::new().expect("WGPU_ADAPTER_NAME matches no adapter")],
        Err(_) => Context::all().into_iter().filter_map(Result::ok).collect(),
    };
    assert!(!all.is_empty(), "no GPU adapter found");
    all
}

fn bench(c: &mut Criterion) {
    let shapes: &[(u32, u32)] = &[(256, 32000), (64, 151936)];
    for ctx in contexts() {
        let mut group = c.benchmark_group(format!("row_stats/{}", ctx.describe()));
        group.sample_size(10);
        for &(rows, vocab) in shapes {
            for dtype in [DType::F32, DType::Bf16] {
                let n = rows as u64 * vocab as u64;
                let bytes = vec![0x3fu8; (n * dtype.size()) as usize];
                let x = ctx.upload("logits", &bytes);
                let y = ctx.upload("targets", bytemuck::cast_slice(&vec![1u32; rows as usize]));
                let out = RowStatsBuffers::new(&ctx, rows);
                let view = LogitsView::new(&x, dtype, rows, vocab);
                let targets = TargetsView::new(&y);
                group.throughput(Throughput::Bytes(n * dtype.size()));
                let id = BenchmarkId::new(format!("{dtype}"), format!("{rows}x{vocab}"));
                group.bench_function(id, |b| {
                    b.iter(|| {
                        let mut enc = ctx
                            .device()
                            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
                        ctx.record_row_stats(&mut enc, &view, &targets, 1.0, &out.outputs())
                            .unwrap();
                        ctx.queue().submit([enc.finish()]);
                        ctx.device()
                            .poll(wgpu::PollType::wait_indefinitely())
                            .unwrap();
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
