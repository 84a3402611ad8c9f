// f16 gradient stores, native (SHADER_F16), a group (two 8-byte quads) at a time, rows
// on 16-byte boundaries; the hardware's round to nearest even, subnormals kept. Through
// the binding snippet's out_set1 and out_set4.
//
// requires: Group, out_set1, out_set4
fn store_elem(i: u32, g: f32) {
    out_set1(i >> 2u, i & 3u, f16(g));
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = (gbase >> 2u) + 2u * q;
    out_set4(i, vec4<f16>(g.a));
    out_set4(i + 1u, vec4<f16>(g.b));
}
