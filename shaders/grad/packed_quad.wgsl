// The gradient into its own buffer of 16-bit values, eight to an element
// (store/packed_quad.wgsl).
@group(0) @binding(6) var<storage, read_write> grad: array<vec4<u32>>;

fn out_word(i: u32, k: u32) -> u32 {
    return grad[i][k];
}

fn out_set1(i: u32, k: u32, w: u32) {
    grad[i][k] = w;
}

fn out_set4(i: u32, v: vec4<u32>) {
    grad[i] = v;
}
