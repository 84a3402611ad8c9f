// Logits stored as f32, read and overwritten by their gradient a group (two 16-byte
// quads) at a time (rows start on 32-byte boundaries). A lane writes only what it read
// (store/f32_quad.wgsl).
@group(0) @binding(0) var<storage, read_write> logits: array<vec4<f32>>;

fn out_set1(i: u32, k: u32, v: f32) {
    logits[i][k] = v;
}

fn out_set4(i: u32, v: vec4<f32>) {
    logits[i] = v;
}
