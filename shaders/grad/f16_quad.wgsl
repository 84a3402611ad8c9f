// The gradient into its own f16 buffer, natively four values an element (SHADER_F16;
// store/f16_quad.wgsl).
@group(0) @binding(6) var<storage, read_write> grad: array<vec4<f16>>;

fn out_set1(i: u32, k: u32, v: f16) {
    grad[i][k] = v;
}

fn out_set4(i: u32, v: vec4<f16>) {
    grad[i] = v;
}
