// Logits i .. i + 7 from any element, for the layouts that read groups as quads (the
// word sweep's, whose gradient rows may lie otherwise than the logits').
//
// requires: Group, load_logit
fn load8(i: u32) -> Group {
    return Group(
        vec4<f32>(load_logit(i), load_logit(i + 1u), load_logit(i + 2u), load_logit(i + 3u)),
        vec4<f32>(load_logit(i + 4u), load_logit(i + 5u), load_logit(i + 6u), load_logit(i + 7u)),
    );
}
