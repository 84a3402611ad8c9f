// Logits stored as f32, read and overwritten by their gradient a group (two 16-byte
// quads) at a time (rows start on 32-byte boundaries). A lane writes only what it read.
@group(0) @binding(0) var<storage, read_write> logits: array<vec4<f32>>;

fn store_elem(i: u32, g: f32) {
    logits[i >> 2u][i & 3u] = g;
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = (gbase >> 2u) + 2u * q;
    logits[i] = g.a;
    logits[i + 1u] = g.b;
}
