// The gradient into its own buffer of 16-bit values (f16 or bf16: the codec snippet
// decides), two to a u32. Rows of odd length share edge words with their neighbours,
// so words are atomics and an edge word is updated one half at a time.
@group(0) @binding(6) var<storage, read_write> grad: array<atomic<u32>>;

fn grad_word_update(w: u32, bits: u32, mask: u32) {
    if (mask == 0xffffffffu) {
        atomicStore(&grad[w], bits);
    } else {
        atomicAnd(&grad[w], ~mask);
        atomicOr(&grad[w], bits);
    }
}

// Four whole words of this row from word w on (no other row holds a half of them).
fn grad_word_store4(w: u32, v: vec4<u32>) {
    atomicStore(&grad[w], v.x);
    atomicStore(&grad[w + 1u], v.y);
    atomicStore(&grad[w + 2u], v.z);
    atomicStore(&grad[w + 3u], v.w);
}
