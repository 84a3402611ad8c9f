// f32 gradient stores, rows anywhere: a group is eight stores. They go through the
// binding snippet's out_set: into the gradient's own buffer (grad/) or over the logits
// (logits/inplace/).
//
// requires: GROUP, Group, out_set
fn store_elem(i: u32, g: f32) {
    out_set(i, g);
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = gbase + q * GROUP;
    out_set(i, g.a.x);
    out_set(i + 1u, g.a.y);
    out_set(i + 2u, g.a.z);
    out_set(i + 3u, g.a.w);
    out_set(i + 4u, g.b.x);
    out_set(i + 5u, g.b.y);
    out_set(i + 6u, g.b.z);
    out_set(i + 7u, g.b.w);
}
