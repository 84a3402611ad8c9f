// Logits stored as f16, read natively (adapters with SHADER_F16). The widening to
// f32 is exact, so this gives the same bits as dtype/f16_packed.wgsl.
enable f16;

@group(0) @binding(0) var<storage, read> logits: array<f16>;

fn load_logit(i: u32) -> f32 {
    return f32(logits[i]);
}
