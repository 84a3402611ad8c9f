// No logit softcap: the logits as they are, then the kept set's keep4 (the identity
// without one).
//
// requires: Group, keep4

fn cap4(x: vec4<f32>) -> vec4<f32> {
    return keep4(x);
}

fn cap1(x: f32) -> f32 {
    return cap4(vec4<f32>(x)).x;
}

fn cap_group(g: Group) -> Group {
    return Group(cap4(g.a), cap4(g.b));
}

// g times ∂s/∂x at s: 1 without a softcap
fn cap_chain4(s: vec4<f32>, g: vec4<f32>) -> vec4<f32> {
    return g;
}
