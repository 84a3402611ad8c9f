// Logits stored as f16, read natively and overwritten by their gradient in f16
// (SHADER_F16); rows anywhere. A 16-bit store writes its two bytes alone, so rows that
// share a 32-bit word need no atomics. The narrowing is the hardware's round to
// nearest even, which keeps f16 subnormals: codec.wgsl's bits.
@group(0) @binding(0) var<storage, read_write> logits: array<f16>;

fn store_elem(i: u32, g: f32) {
    logits[i] = f16(g);
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = gbase + q * GROUP;
    let a = vec4<f16>(g.a);
    let b = vec4<f16>(g.b);
    logits[i] = a.x;
    logits[i + 1u] = a.y;
    logits[i + 2u] = a.z;
    logits[i + 3u] = a.w;
    logits[i + 4u] = b.x;
    logits[i + 5u] = b.y;
    logits[i + 6u] = b.z;
    logits[i + 7u] = b.w;
}
