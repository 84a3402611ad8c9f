// 16-bit logits (f16 or bf16: codec.wgsl decides by override), a group of eight in one
// 16-byte load (rows start on 16-byte boundaries).
// (The binding: logits/in/ read-only, logits/inplace/ read-write with the stores.)
//
// requires: Group, decode_logit16, group_head, logits, unpack_group16

fn load_logit(i: u32) -> f32 {
    return decode_logit16((logits[i >> 3u][(i >> 1u) & 3u] >> ((i & 1u) * 16u)) & 0xffffu);
}

// Logits i .. i + 7, from any element: the four words from the one holding i on,
// realigned by half a word (with a fifth word) when i is odd.
fn load8(i: u32) -> Group {
    let k = i >> 1u;
    var w = vec4<u32>(logits[(k) >> 2u][(k) & 3u], logits[(k + 1u) >> 2u][(k + 1u) & 3u], logits[(k + 2u) >> 2u][(k + 2u) & 3u], logits[(k + 3u) >> 2u][(k + 3u) & 3u]);
    if ((i & 1u) != 0u) {
        let next = vec4<u32>(w.y, w.z, w.w, logits[(k + 4u) >> 2u][(k + 4u) & 3u]);
        w = (w >> vec4<u32>(16u)) | (next << vec4<u32>(16u));
    }
    return unpack_group16(w);
}

fn load_group(xbase: u32, q: u32) -> Group {
    return unpack_group16(logits[(xbase >> 3u) + q]);
}

fn load_tail(xbase: u32, q: u32, n: u32) -> Group {
    return group_head(unpack_group16(logits[(xbase >> 3u) + q]), n);
}
