// f32 gradient stores a group (two 16-byte quads) at a time, rows on 32-byte
// boundaries of the window; through the binding snippet's out_set1 and out_set4.
//
// requires: Group, out_set1, out_set4
fn store_elem(i: u32, g: f32) {
    out_set1(i >> 2u, i & 3u, g);
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = (gbase >> 2u) + 2u * q;
    out_set4(i, g.a);
    out_set4(i + 1u, g.b);
}
