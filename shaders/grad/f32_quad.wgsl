// The gradient into its own f32 buffer a group (two 16-byte quads) at a time (its
// rows start on 32-byte boundaries of the window).
@group(0) @binding(6) var<storage, read_write> grad: array<vec4<f32>>;

fn store_elem(i: u32, g: f32) {
    grad[i >> 2u][i & 3u] = g;
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = (gbase >> 2u) + 2u * q;
    grad[i] = g.a;
    grad[i + 1u] = g.b;
}
