// Logits stored as f32, overwritten by their gradient (a training step needs the
// logits no more after its backward); rows anywhere. Each element is read, then
// written, by one lane.
@group(0) @binding(0) var<storage, read_write> logits: array<f32>;

fn store_elem(i: u32, g: f32) {
    logits[i] = g;
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = gbase + q * GROUP;
    logits[i] = g.a.x;
    logits[i + 1u] = g.a.y;
    logits[i + 2u] = g.a.z;
    logits[i + 3u] = g.a.w;
    logits[i + 4u] = g.b.x;
    logits[i + 5u] = g.b.y;
    logits[i + 6u] = g.b.z;
    logits[i + 7u] = g.b.w;
}
