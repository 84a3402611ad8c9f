// Logits stored as f16, read natively four at a time (SHADER_F16; rows start on
// 8-byte boundaries). The widening is exact.
@group(0) @binding(0) var<storage, read> logits: array<vec4<f16>>;

fn load_logit(i: u32) -> f32 {
    return f32(logits[i >> 2u][i & 3u]);
}

fn load_quad(q: u32) -> vec4<f32> {
    return vec4<f32>(logits[q]);
}
