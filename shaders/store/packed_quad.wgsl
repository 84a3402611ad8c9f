// 16-bit gradient values (f16 or bf16: codec.wgsl encodes) a group of eight in one
// 16-byte store; rows start on 16-byte boundaries, so no two rows share a word: plain
// stores, no atomics. Through the binding snippet's out_word, out_set1 and out_set4.
//
// requires: Group, encode_grad16, out_set1, out_set4, out_word, pack_group16

// One element, in its half of the word (the other half is this lane's too).
fn store_elem(i: u32, g: f32) {
    let k = (i >> 1u) & 3u;
    let shift = (i & 1u) * 16u;
    let w = out_word(i >> 3u, k);
    out_set1(i >> 3u, k, (w & ~(0xffffu << shift)) | (encode_grad16(g) << shift));
}

fn store_group(gbase: u32, q: u32, g: Group, numbers: bool) {
    out_set4((gbase >> 3u) + q, pack_group16(g, numbers));
}
