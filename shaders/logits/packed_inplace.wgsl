// 16-bit logits, two to a u32, overwritten by their gradient. A word at a row's edge
// may hold an element of the neighbouring row, which another workgroup reads and
// writes at the same time: words are atomics, and an edge word is updated one half at
// a time (and, or) so the neighbour's half is never disturbed.
@group(0) @binding(0) var<storage, read_write> logits: array<atomic<u32>>;

fn load_logit(i: u32) -> f32 {
    return decode_logit16((atomicLoad(&logits[i >> 1u]) >> ((i & 1u) * 16u)) & 0xffffu);
}

fn grad_word_update(w: u32, bits: u32, mask: u32) {
    if (mask == 0xffffffffu) {
        atomicStore(&logits[w], bits);
    } else {
        atomicAnd(&logits[w], ~mask);
        atomicOr(&logits[w], bits);
    }
}

// Four elements from two words (the four-at-a-time sweep, rows on 8-byte boundaries).
fn load_quad(q: u32) -> vec4<f32> {
    return unpack_quad16(vec2<u32>(atomicLoad(&logits[2u * q]), atomicLoad(&logits[2u * q + 1u])));
}
