// A row's groups for the layouts that read element by element (rows anywhere), from
// their load8 and load_logit.
//
// requires: GROUP, Group, load8, load_logit, neg_inf

fn load_group(xbase: u32, q: u32) -> Group {
    return load8(xbase + q * GROUP);
}

// The first n (< 8) logits of group q, the others −inf; nothing past the row is read.
fn load_tail(xbase: u32, q: u32, n: u32) -> Group {
    var v = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var j = 0u; j < 8u; j++) {
        v[j] = neg_inf();
        if (j < n) {
            v[j] = load_logit(xbase + q * GROUP + j);
        }
    }
    return Group(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}
