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
