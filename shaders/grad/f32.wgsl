// The gradient into its own f32 buffer, rows anywhere: a group is eight stores.
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

fn store_elem(i: u32, g: f32) {
    grad[i] = g;
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    let i = gbase + q * GROUP;
    grad[i] = g.a.x;
    grad[i + 1u] = g.a.y;
    grad[i + 2u] = g.a.z;
    grad[i + 3u] = g.a.w;
    grad[i + 4u] = g.b.x;
    grad[i + 5u] = g.b.y;
    grad[i + 6u] = g.b.z;
    grad[i + 7u] = g.b.w;
}
