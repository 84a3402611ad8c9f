// The gradient into its own f32 buffer, four values an element (store/f32_quad.wgsl).
@group(0) @binding(6) var<storage, read_write> grad: array<vec4<f32>>;

fn out_set1(i: u32, k: u32, v: f32) {
    grad[i][k] = v;
}

fn out_set4(i: u32, v: vec4<f32>) {
    grad[i] = v;
}
