// The gradient into its own f32 buffer, four at a time (rows start on 16-byte
// boundaries, like the logits').
@group(0) @binding(6) var<storage, read_write> grad: array<vec4<f32>>;

// Stores the first `valid` elements of quad q (4 but in a row's last quad).
fn grad_store_quad(q: u32, g: vec4<f32>, valid: u32) {
    if (valid == 4u) {
        grad[q] = g;
    } else {
        for (var j = 0u; j < valid; j++) {
            grad[q][j] = g[j];
        }
    }
}
