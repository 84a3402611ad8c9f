// Logits stored as f32, rows anywhere: a group is eight loads.
// (The binding: logits/in/ read-only, logits/inplace/ read-write with the stores.)
//
// requires: Group, logits

fn load_logit(i: u32) -> f32 {
    return logits[i];
}

// Logits i .. i + 7, from any element.
fn load8(i: u32) -> Group {
    return Group(
        vec4<f32>(logits[i], logits[i + 1u], logits[i + 2u], logits[i + 3u]),
        vec4<f32>(logits[i + 4u], logits[i + 5u], logits[i + 6u], logits[i + 7u]),
    );
}
