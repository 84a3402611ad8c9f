// Logits stored as bf16, two to a u32 (little-endian: element 2k is the low half).
// A bf16 is the high half of an f32, so widening is a shift.
@group(0) @binding(0) var<storage, read> logits: array<u32>;

fn load_logit(i: u32) -> f32 {
    let word = logits[i >> 1u];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
}
