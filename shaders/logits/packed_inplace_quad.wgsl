// 16-bit logits overwritten by their gradient, four at a time (rows start on 8-byte
// boundaries, so no two rows share a quad and plain loads and stores suffice; a row's
// last quad keeps the padding past the row as it was).
@group(0) @binding(0) var<storage, read_write> logits: array<vec2<u32>>;

fn load_logit(i: u32) -> f32 {
    return decode_logit16((logits[i >> 2u][(i >> 1u) & 1u] >> ((i & 1u) * 16u)) & 0xffffu);
}

fn load_quad(q: u32) -> vec4<f32> {
    return unpack_quad16(logits[q]);
}

fn grad_store_quad(q: u32, g: vec4<f32>, valid: u32) {
    logits[q] = pack_quad16(logits[q], g, valid);
}
