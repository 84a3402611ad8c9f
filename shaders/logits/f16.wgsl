// Logits stored as f16, read natively (SHADER_F16; needs enable_f16.wgsl first). The
// widening is exact, so this gives the bits of logits/packed.wgsl with codec.wgsl.
@group(0) @binding(0) var<storage, read> logits: array<f16>;

fn load_logit(i: u32) -> f32 {
    return f32(logits[i]);
}
