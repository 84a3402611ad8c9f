//! Portability without the hardware: every shader variant the crate can build parses
//! and validates with naga, and translates with naga's back ends to SPIR-V (Vulkan),
//! MSL (Metal), HLSL (DX12) and, for the variants a GL adapter would run, GLSL.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use wgpu_policy_loss::tooling::{shader_variants, PipelineKey};
use wgpu_policy_loss::Paths;

/// Parses, validates and specialises the override constants as wgpu does.
fn compile(name: &str, key: &PipelineKey) -> (naga::Module, ModuleInfo) {
    let src = &key.source();
    let paths = key.paths;
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(src)));
    let mut caps = Capabilities::empty();
    if paths.shader_f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if paths.subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(src)));
    let mut constants = naga::back::PipelineConstants::default();
    for (k, v) in key.constants() {
        constants.insert(k.to_string(), v);
    }
    let (module, info) =
        naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
            .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
    (module.into_owned(), info.into_owned())
}

fn entry_point(module: &naga::Module, key: &PipelineKey) -> String {
    let ep = key.entry_point();
    assert!(
        module.entry_points.iter().any(|e| e.name == ep),
        "no entry point {ep}"
    );
    ep.to_string()
}

#[test]
fn every_variant_validates_and_translates() {
    let variants = shader_variants();
    assert!(
        variants.len() >= 20,
        "expected every kernel, dtype and path"
    );
    for (name, key) in &variants {
        let paths = &key.paths;
        let (module, info) = compile(name, key);
        let ep = entry_point(&module, key);

        let spv_opts = spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        let words = spv::write_vec(&module, &info, &spv_opts, None)
            .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));
        assert_eq!(words[0], 0x0723_0203, "{name}: SPIR-V magic");

        let msl_opts = msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        };
        let msl_pipe = msl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, ep.clone())),
            ..Default::default()
        };
        let (msl_src, _) = msl::write_string(&module, &info, &msl_opts, &msl_pipe)
            .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));
        assert!(msl_src.contains("kernel"), "{name}: MSL has no kernel");

        let hlsl_opts = hlsl::Options {
            shader_model: hlsl::ShaderModel::V6_2,
            ..Default::default()
        };
        let hlsl_pipe = hlsl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, ep.clone())),
        };
        let mut hlsl_src = String::new();
        hlsl::Writer::new(&mut hlsl_src, &hlsl_opts, &hlsl_pipe)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{name}: HLSL: {e}"));
        assert!(
            hlsl_src.contains(&format!("numthreads({}", key.workgroup())),
            "{name}: HLSL workgroup size"
        );

        // GL adapters have neither f16 nor subgroups in wgpu: only the fallback runs there
        if *paths == Paths::FALLBACK {
            let glsl_opts = glsl::Options {
                version: glsl::Version::Embedded {
                    version: 310,
                    is_webgl: false,
                },
                ..Default::default()
            };
            let glsl_pipe = glsl::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: ep.clone(),
                multiview: None,
            };
            let mut glsl_src = String::new();
            glsl::Writer::new(
                &mut glsl_src,
                &module,
                &info,
                &glsl_opts,
                &glsl_pipe,
                naga::proc::BoundsCheckPolicies::default(),
            )
            .and_then(|mut w| w.write())
            .unwrap_or_else(|e| panic!("{name}: GLSL: {e}"));
            assert!(
                glsl_src.contains(&format!("local_size_x = {}", key.workgroup())),
                "{name}: GLSL workgroup size"
            );
        }
    }
}

/// The fallback must not depend on any optional capability: it validates with none.
#[test]
fn fallback_needs_no_capability() {
    for (name, key) in shader_variants() {
        if key.paths == Paths::FALLBACK {
            compile(&name, &key);
        }
    }
}

/// WebGPU's default limits, which a browser's adapter may not exceed: at most 8
/// storage buffers a stage and 256 invocations a workgroup, in every variant (after the
/// overrides). Also no constant expression that is NaN or ±inf, which naga accepts
/// and the browser's compiler (Tint) rejects: such values are made at run time.
#[test]
fn every_variant_keeps_to_webgpu_default_limits() {
    for (name, key) in &shader_variants() {
        let (module, _) = compile(name, key);
        let storage = module
            .global_variables
            .iter()
            .filter(|(_, g)| matches!(g.space, naga::AddressSpace::Storage { .. }))
            .count();
        assert!(storage <= 8, "{name}: {storage} storage buffers");
        for ep in &module.entry_points {
            let [x, y, z] = ep.workgroup_size;
            assert!(x * y * z <= 256, "{name}: workgroup of {}", x * y * z);
        }
        let src = key.source();
        for bits in ["0x7fc00000u)", "0xff800000u)", "0x7f800000u)"] {
            assert!(
                !src.contains(&format!("bitcast<f32>({bits}")),
                "{name}: bitcast<f32>({bits} is a constant NaN/inf"
            );
        }
    }
}
