// The gradient into its own f16 buffer, stored natively (SHADER_F16), rows anywhere: a
// 16-bit store writes its two bytes alone. The hardware's round to nearest even keeps
// subnormals: codec.wgsl's bits.
@group(0) @binding(6) var<storage, read_write> grad: array<f16>;

fn store_elem(i: u32, g: f32) {
    grad[i] = f16(g);
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = gbase + q * GROUP;
    let a = vec4<f16>(g.a);
    let b = vec4<f16>(g.b);
    grad[i] = a.x;
    grad[i + 1u] = a.y;
    grad[i + 2u] = a.z;
    grad[i + 3u] = a.w;
    grad[i + 4u] = b.x;
    grad[i + 5u] = b.y;
    grad[i + 6u] = b.z;
    grad[i + 7u] = b.w;
}
