// The gradient into its own f32 buffer.
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

fn grad_store(i: u32, g: f32) {
    grad[i] = g;
}
