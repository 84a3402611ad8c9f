// Logits stored as 16-bit values (f16 or bf16: codec.wgsl decides by override), two to
// a u32, little-endian (element 2k is the low half of word k), rows anywhere.
// (The binding: logits/in/packed.wgsl.)
//
// requires: Group, decode_logit16, logits, unpack_group16

fn load_logit(i: u32) -> f32 {
    return decode_logit16((logits[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu);
}

// Logits i .. i + 7, from any element: the four words from the one holding i on,
// realigned by half a word (with a fifth word) when i is odd.
fn load8(i: u32) -> Group {
    let k = i >> 1u;
    var w = vec4<u32>(logits[k], logits[k + 1u], logits[k + 2u], logits[k + 3u]);
    if ((i & 1u) != 0u) {
        let next = vec4<u32>(w.y, w.z, w.w, logits[k + 4u]);
        w = (w >> vec4<u32>(16u)) | (next << vec4<u32>(16u));
    }
    return unpack_group16(w);
}
