// The gradient into its own f32 buffer, four at a time (rows start on 16-byte
// boundaries, like the logits').
@group(0) @binding(6) var<storage, read_write> grad: array<vec4<f32>>;

fn grad_store(i: u32, g: f32) {
    grad[i >> 2u][i & 3u] = g;
}

fn grad_store_quad(q: u32, g: vec4<f32>) {
    grad[q] = g;
}
