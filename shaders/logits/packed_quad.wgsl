// 16-bit logits (f16 or bf16: codec.wgsl decides by override), four to a vec2<u32>,
// read four at a time (rows start on 8-byte boundaries).
@group(0) @binding(0) var<storage, read> logits: array<vec2<u32>>;

fn load_logit(i: u32) -> f32 {
    return decode_logit16((logits[i >> 2u][(i >> 1u) & 1u] >> ((i & 1u) * 16u)) & 0xffffu);
}

fn load_quad(q: u32) -> vec4<f32> {
    return unpack_quad16(logits[q]);
}
