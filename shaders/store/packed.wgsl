// 16-bit gradient words (f16 or bf16: codec.wgsl encodes), two values to a u32, rows
// anywhere (sweep/words.wgsl). A word at a row's edge may hold an element of the
// neighbouring row, which another workgroup writes (and, in place, reads) at the same
// time: words are atomics, and an edge word is updated one half at a time (and, or) so
// the neighbour's half is never disturbed. Through the binding snippet's out_store,
// out_and and out_or.
//
// requires: encode_grad16, out_and, out_or, out_store
fn grad_word_update(w: u32, bits: u32, mask: u32) {
    if (mask == 0xffffffffu) {
        out_store(w, bits);
    } else {
        out_and(w, ~mask);
        out_or(w, bits);
    }
}

// Four whole words of this row from word w on (no other row holds a half of them).
fn grad_word_store4(w: u32, v: vec4<u32>) {
    out_store(w, v.x);
    out_store(w + 1u, v.y);
    out_store(w + 2u, v.z);
    out_store(w + 3u, v.w);
}

// One element, in its half of the word: the other half may be another lane's (a kept
// set's scatter) or another row's.
fn store_elem(i: u32, g: f32) {
    let shift = (i & 1u) * 16u;
    grad_word_update(i >> 1u, encode_grad16(g) << shift, 0xffffu << shift);
}
