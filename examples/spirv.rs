//! Writes the SPIR-V that wgpu's Vulkan back end would hand a driver for each pipeline
//! variant of the library (`shader_variants()`), for offline compilers: naga's
//! `spv-out` with wgpu-hal's options (index bounds checks `Restrict`, buffer checks
//! left to robustness2, loop bounding, integer-division checks), the override
//! constants applied as wgpu applies them. `scripts/gpu-isa.sh` compiles the output on
//! Mesa's RADV null device to count real GPU instructions.
//!
//! ```text
//! cargo run --release --example spirv -- OUT_DIR [NAME_FILTER] [--unchecked]
//! ```
//!
//! Writes `OUT_DIR/<n>.spv` and `OUT_DIR/manifest.tsv`: index, name, entry point, file,
//! and the logits a lane takes in one step of the statistics and the gradient sweep
//! (the WGSL's `STATS_STEP` and `GRAD_STEP`; 0 where the module has no such sweep).
//! `--unchecked` writes what `ShaderRuntimeChecks::unchecked()` gives instead: no
//! bounds checks, no loop bounding, no division checks.

use std::io::Write;

use naga::back::spv;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_policy_loss::tooling::{shader_variants, PipelineKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let unchecked = args.iter().any(|a| a == "--unchecked");
    let rest: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let out = rest
        .first()
        .ok_or("usage: spirv OUT_DIR [NAME_FILTER] [--unchecked]")?;
    let filter = rest.get(1).map(|s| s.as_str()).unwrap_or("");
    std::fs::create_dir_all(out)?;
    let mut manifest = std::fs::File::create(format!("{out}/manifest.tsv"))?;
    let mut n = 0;
    for (name, key) in shader_variants() {
        if !name.contains(filter) {
            continue;
        }
        let (words, steps) = spirv(&key, unchecked).map_err(|e| format!("{name}: {e}"))?;
        let file = format!("{out}/{n}.spv");
        std::fs::write(&file, bytemuck::cast_slice::<u32, u8>(&words))?;
        let ep = key.entry_point();
        writeln!(
            manifest,
            "{n}\t{name}\t{ep}\t{file}\t{}\t{}",
            steps[0], steps[1]
        )?;
        n += 1;
    }
    eprintln!("spirv: {n} variants in {out}");
    Ok(())
}

/// The module of `key` as wgpu-core validates it and wgpu-hal's Vulkan back end writes
/// it for a compute pipeline, and its sweeps' `STATS_STEP` and `GRAD_STEP`.
fn spirv(key: &PipelineKey, unchecked: bool) -> Result<(Vec<u32>, [u32; 2]), String> {
    let src = key.source();
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src))?;
    let steps = ["STATS_STEP", "GRAD_STEP"].map(|name| step(&module, name));
    let mut caps = Capabilities::empty();
    if key.paths.shader_f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if key.paths.subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(&src))?;
    let mut constants = naga::back::PipelineConstants::default();
    for (k, v) in key.constants() {
        constants.insert(k.to_string(), v);
    }
    let ep = key.entry_point();
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, ep)),
        &constants,
    )
    .map_err(|e| e.to_string())?;
    let checked = naga::proc::BoundsCheckPolicy::Restrict;
    let none = naga::proc::BoundsCheckPolicy::Unchecked;
    let options = spv::Options {
        // a Vulkan 1.3 device
        lang_version: (1, 6),
        flags: spv::WriterFlags::FORCE_POINT_SIZE | spv::WriterFlags::LABEL_VARYINGS,
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: if unchecked { none } else { checked },
            // robustness2 takes the buffer checks
            buffer: none,
            image_load: none,
            binding_array: none,
        },
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::Native,
        force_loop_bounding: !unchecked,
        emit_int_div_checks: !unchecked,
        ..Default::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: ep.to_string(),
    };
    let words =
        spv::write_vec(&module, &info, &options, Some(&pipeline)).map_err(|e| e.to_string())?;
    Ok((words, steps))
}

/// The value of the module's `const NAME: u32`, or 0.
fn step(module: &naga::Module, name: &str) -> u32 {
    module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .and_then(|(_, c)| match module.global_expressions[c.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => Some(v),
            _ => None,
        })
        .unwrap_or(0)
}
