// 16-bit logits, two to a u32, read as atomics (the binding of logits/inplace/packed.wgsl,
// where rows may share a word with a neighbour that is written at the same time).
//
// requires: Group, decode_logit16, logits, unpack_group16

fn load_logit(i: u32) -> f32 {
    return decode_logit16((atomicLoad(&logits[i >> 1u]) >> ((i & 1u) * 16u)) & 0xffffu);
}

// Logits i .. i + 7, from any element: the four words from the one holding i on,
// realigned by half a word (with a fifth word) when i is odd.
fn load8(i: u32) -> Group {
    let k = i >> 1u;
    var w = vec4<u32>(atomicLoad(&logits[k]), atomicLoad(&logits[k + 1u]), atomicLoad(&logits[k + 2u]), atomicLoad(&logits[k + 3u]));
    if ((i & 1u) != 0u) {
        let next = vec4<u32>(w.y, w.z, w.w, atomicLoad(&logits[k + 4u]));
        w = (w >> vec4<u32>(16u)) | (next << vec4<u32>(16u));
    }
    return unpack_group16(w);
}
