// 16-bit logits overwritten by their gradient a group (16 bytes) at a time (rows
// start on 16-byte boundaries, so no two rows share a word: plain loads and stores).
@group(0) @binding(0) var<storage, read_write> logits: array<vec4<u32>>;

// One element, in its half of the word (the other half is this lane's too).
fn store_elem(i: u32, g: f32) {
    let k = (i >> 1u) & 3u;
    let shift = (i & 1u) * 16u;
    let w = logits[i >> 3u][k];
    logits[i >> 3u][k] = (w & ~(0xffffu << shift)) | (encode_grad16(g) << shift);
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    logits[(gbase >> 3u) + q] = pack_group16(g, numbers);
}
