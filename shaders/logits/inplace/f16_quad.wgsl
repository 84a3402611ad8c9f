// Logits stored as f16, read natively and overwritten by their f16 gradient a group
// (two 8-byte quads) at a time (SHADER_F16; rows start on 16-byte boundaries;
// store/f16_quad.wgsl).
@group(0) @binding(0) var<storage, read_write> logits: array<vec4<f16>>;

fn out_set1(i: u32, k: u32, v: f16) {
    logits[i][k] = v;
}

fn out_set4(i: u32, v: vec4<f16>) {
    logits[i] = v;
}
