// The gradient into its own f32 buffer, rows anywhere (store/f32.wgsl).
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

fn out_set(i: u32, v: f32) {
    grad[i] = v;
}
