//! The fused forward + backward against the unfused baseline and the copy roofline,
//! per adapter, side by side (criterion: wall time of record + submit + wait).
//!
//! `cargo bench --bench policy_loss`; `WGPU_POLICY_LOSS_BENCH_LARGE=1` adds
//! T = 16384, V = 151936, bf16 (real GPUs); `WGPU_ADAPTER_NAME=vulkan` picks one
//! adapter. The CLI's `bench` prints the same comparison as a table with GPU times.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wgpu_policy_loss::tools::bench::{BenchShape, Workload};
use wgpu_policy_loss::{wgpu, Context};

fn contexts() -> Vec<Context> {
    let all: Vec<Context> = match std::env::var("WGPU_ADAPTER_NAME") {
        Ok(name) => vec![Context::from_adapter(&Context::adapter_named(&name).unwrap()).unwrap()],
        Err(_) => Context::all().into_iter().filter_map(Result::ok).collect(),
    };
    assert!(!all.is_empty(), "no GPU adapter found");
    all
}

type Recorder = fn(&Workload, &mut wgpu::CommandEncoder) -> wgpu_policy_loss::Result<()>;

fn bench(c: &mut Criterion) {
    let large = std::env::var_os("WGPU_POLICY_LOSS_BENCH_LARGE").is_some();
    for ctx in contexts() {
        let mut group = c.benchmark_group(format!("policy_loss/{}", ctx.describe()));
        group.sample_size(10);
        for shape in BenchShape::defaults(large) {
            let Ok(w) = Workload::new(&ctx, shape) else {
                continue; // larger than this device's buffers
            };
            // bytes of the fused floor: two reads and one write of the logits
            group.throughput(Throughput::Bytes(3 * shape.logits_bytes()));
            let mut cases: Vec<(&str, Recorder)> = vec![
                ("fused", Workload::record_fused),
                ("copy_buffer", Workload::record_copy_buffer),
                ("copy_kernel", Workload::record_copy_kernel),
            ];
            if w.has_unfused() {
                cases.insert(1, ("unfused", Workload::record_unfused));
            }
            for (name, record) in cases {
                group.bench_function(BenchmarkId::new(name, shape.to_string()), |b| {
                    b.iter(|| {
                        let mut enc = ctx.device().create_command_encoder(&Default::default());
                        record(&w, &mut enc).unwrap();
                        ctx.submit_and_wait(enc).unwrap();
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
