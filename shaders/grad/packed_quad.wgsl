// The gradient into its own buffer of 16-bit values (f16 or bf16: codec.wgsl decides),
// four at a time as a vec2<u32> (rows start on 8-byte boundaries, so no two rows share
// a quad: plain stores, no atomics).
@group(0) @binding(6) var<storage, read_write> grad: array<vec2<u32>>;

fn grad_store_quad(q: u32, g: vec4<f32>, valid: u32) {
    grad[q] = pack_quad16(select(grad[q], vec2<u32>(0u), valid == 4u), g, valid);
}
