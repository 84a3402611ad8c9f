// Logits stored as 16-bit values (f16 or bf16: codec.wgsl decides by override), two to a
// u32, little-endian: element 2k is the low half of word k.
@group(0) @binding(0) var<storage, read> logits: array<u32>;

fn load_logit(i: u32) -> f32 {
    return decode_logit16((logits[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu);
}
