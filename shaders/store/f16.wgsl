// f16 gradient stores, native (SHADER_F16), rows anywhere: a 16-bit store writes its
// two bytes alone, so rows that share a 32-bit word need no atomics. The narrowing is
// the hardware's round to nearest even, which keeps f16 subnormals: codec.wgsl's bits.
// Through the binding snippet's out_set.
//
// requires: GROUP, Group, out_set
fn store_elem(i: u32, g: f32) {
    out_set(i, f16(g));
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = gbase + q * GROUP;
    let a = vec4<f16>(g.a);
    let b = vec4<f16>(g.b);
    out_set(i, a.x);
    out_set(i + 1u, a.y);
    out_set(i + 2u, a.z);
    out_set(i + 3u, a.w);
    out_set(i + 4u, b.x);
    out_set(i + 5u, b.y);
    out_set(i + 6u, b.z);
    out_set(i + 7u, b.w);
}
