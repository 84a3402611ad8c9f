//! `info`: what each adapter offers this library.

use wgpu_policy_loss::{adapters, available_paths, wgpu, Context, Error, Result};

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn run() -> Result<()> {
    let all = adapters();
    if all.is_empty() {
        return Err(Error::NoAdapter(String::new()));
    }
    for (i, adapter) in all.iter().enumerate() {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let paths = available_paths(adapter);
        let yes = |b: bool| if b { "yes" } else { "no (fallback)" };
        println!("adapter {i}: {}", info.name);
        println!(
            "  backend:            {:?} ({:?})",
            info.backend, info.device_type
        );
        println!("  driver:             {} {}", info.driver, info.driver_info);
        // listed is not usable: a headless driver may list an adapter (NVIDIA's GL
        // without a display) that refuses a device; check, bench and the tests skip it
        match Context::from_adapter(adapter) {
            Ok(_) => println!("  device:             opens"),
            Err(Error::RequestDevice { reason, .. }) => println!(
                "  device:             UNAVAILABLE, could not open a device: {reason} \
                 (skipped by check, bench and the tests)"
            ),
            Err(e) => println!("  device:             UNAVAILABLE: {e}"),
        }
        println!("  f16 (SHADER_F16):   {}", yes(paths.shader_f16));
        println!(
            "  subgroups:          {}{}",
            yes(paths.subgroups),
            if paths.subgroups {
                format!(
                    " (size {}..={})",
                    info.subgroup_min_size, info.subgroup_max_size
                )
            } else {
                String::new()
            }
        );
        let ts = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        println!(
            "  timestamps:         {}",
            if adapter.features().contains(ts) {
                "yes (bench reports GPU time)"
            } else {
                "no (bench reports wall time)"
            }
        );
        println!(
            "  max storage binding: {}",
            mib(limits.max_storage_buffer_binding_size)
        );
        println!("  max buffer:          {}", mib(limits.max_buffer_size));
        println!(
            "  workgroups:          {} per dimension, {} invocations, {} B shared",
            limits.max_compute_workgroups_per_dimension,
            limits.max_compute_invocations_per_workgroup,
            limits.max_compute_workgroup_storage_size
        );
        println!(
            "  storage offset alignment: {} B",
            limits.min_storage_buffer_offset_alignment
        );
    }
    Ok(())
}
