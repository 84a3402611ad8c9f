// Logits stored as f16, read natively a group (two 8-byte quads, one 16-byte load) at
// a time (SHADER_F16; rows start on 16-byte boundaries). The widening is exact.
// (The binding: logits/in/ read-only, logits/inplace/ read-write with the stores.)
//
// requires: Group, group_head, logits

fn load_logit(i: u32) -> f32 {
    return f32(logits[i >> 2u][i & 3u]);
}

fn load_group(xbase: u32, q: u32) -> Group {
    let i = (xbase >> 2u) + 2u * q;
    return Group(vec4<f32>(logits[i]), vec4<f32>(logits[i + 1u]));
}

fn load_tail(xbase: u32, q: u32, n: u32) -> Group {
    let i = (xbase >> 2u) + 2u * q;
    return group_head(Group(vec4<f32>(logits[i]), vec4<f32>(logits[i + 1u])), n);
}
