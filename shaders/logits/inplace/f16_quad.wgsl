// Logits stored as f16, read natively and overwritten by their f16 gradient a group
// (two 8-byte quads) at a time (SHADER_F16; rows start on 16-byte boundaries). The
// narrowing is the hardware's round to nearest even, subnormals kept.
@group(0) @binding(0) var<storage, read_write> logits: array<vec4<f16>>;

fn store_elem(i: u32, g: f32) {
    logits[i >> 2u][i & 3u] = f16(g);
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = (gbase >> 2u) + 2u * q;
    logits[i] = vec4<f16>(g.a);
    logits[i + 1u] = vec4<f16>(g.b);
}
