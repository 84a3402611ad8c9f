// 16-bit logits, two to a u32, overwritten by their gradient; rows anywhere. A word at
// a row's edge may hold an element of the neighbouring row, which another workgroup
// reads and writes at the same time: words are atomics, and an edge word is updated
// one half at a time (and, or) so the neighbour's half is never disturbed
// (sweep/words.wgsl).
@group(0) @binding(0) var<storage, read_write> logits: array<atomic<u32>>;

fn grad_word_update(w: u32, bits: u32, mask: u32) {
    if (mask == 0xffffffffu) {
        atomicStore(&logits[w], bits);
    } else {
        atomicAnd(&logits[w], ~mask);
        atomicOr(&logits[w], bits);
    }
}

// Four whole words of this row from word w on (no other row holds a half of them).
fn grad_word_store4(w: u32, v: vec4<u32>) {
    atomicStore(&logits[w], v.x);
    atomicStore(&logits[w + 1u], v.y);
    atomicStore(&logits[w + 2u], v.z);
    atomicStore(&logits[w + 3u], v.w);
}
