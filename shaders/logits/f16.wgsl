// Logits stored as f16, read natively (SHADER_F16; needs enable_f16.wgsl first); rows
// anywhere. The widening is exact, so this gives the bits of logits/packed.wgsl.
// (The binding: logits/in/ read-only, logits/inplace/ read-write with the stores.)
//
// requires: Group, logits

fn load_logit(i: u32) -> f32 {
    return f32(logits[i]);
}

// Logits i .. i + 7, from any element.
fn load8(i: u32) -> Group {
    return Group(
        vec4<f32>(f32(logits[i]), f32(logits[i + 1u]), f32(logits[i + 2u]), f32(logits[i + 3u])),
        vec4<f32>(f32(logits[i + 4u]), f32(logits[i + 5u]), f32(logits[i + 6u]), f32(logits[i + 7u])),
    );
}
