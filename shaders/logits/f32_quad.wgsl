// Logits stored as f32, read a group (two 16-byte quads) at a time: rows start on
// 32-byte boundaries of the window, which ends on a 16-byte one.
// (The binding: logits/in/ read-only, logits/inplace/ read-write with the stores.)
//
// requires: Group, group_head, logits, neg_inf

fn load_logit(i: u32) -> f32 {
    return logits[i >> 2u][i & 3u];
}

fn load_group(xbase: u32, q: u32) -> Group {
    let i = (xbase >> 2u) + 2u * q;
    return Group(logits[i], logits[i + 1u]);
}

// The row's last group of n (< 8) logits, the others −inf: its second quad is read
// only when the row reaches it (the window may end before it).
fn load_tail(xbase: u32, q: u32, n: u32) -> Group {
    let i = (xbase >> 2u) + 2u * q;
    var g = Group(logits[i], vec4<f32>(neg_inf()));
    if (n > 4u) {
        g.b = logits[i + 1u];
    }
    return group_head(g, n);
}
