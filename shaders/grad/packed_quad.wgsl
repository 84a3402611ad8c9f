// The gradient into its own buffer of 16-bit values (f16 or bf16: codec.wgsl decides),
// a group of eight in one 16-byte store (rows start on 16-byte boundaries, so no two
// rows share a word: plain stores, no atomics).
@group(0) @binding(6) var<storage, read_write> grad: array<vec4<u32>>;

// One element, in its half of the word (the other half is this lane's too).
fn store_elem(i: u32, g: f32) {
    let k = (i >> 1u) & 3u;
    let shift = (i & 1u) * 16u;
    let w = grad[i >> 3u][k];
    grad[i >> 3u][k] = (w & ~(0xffffu << shift)) | (encode_grad16(g) << shift);
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    grad[(gbase >> 3u) + q] = pack_group16(g, numbers);
}
