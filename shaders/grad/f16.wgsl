// The gradient into its own f16 buffer, stored natively (SHADER_F16; store/f16.wgsl).
@group(0) @binding(6) var<storage, read_write> grad: array<f16>;

fn out_set(i: u32, v: f16) {
    grad[i] = v;
}
