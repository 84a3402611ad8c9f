// The gradient into its own f16 buffer, natively a group (two 8-byte quads) at a time
// (SHADER_F16; rows start on 16-byte boundaries).
@group(0) @binding(6) var<storage, read_write> grad: array<vec4<f16>>;

fn store_elem(i: u32, g: f32) {
    grad[i >> 2u][i & 3u] = f16(g);
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = (gbase >> 2u) + 2u * q;
    grad[i] = vec4<f16>(g.a);
    grad[i + 1u] = vec4<f16>(g.b);
}
