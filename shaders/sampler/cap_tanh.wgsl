// The sampler's logit softcap (docs/MATH.md#the-samplers-distribution; Gemma 2, Grok):
// s = c·tanh(x/c) with c = params.softcap > 0, before the temperature; the gradient
// gets its slope 1 − tanh²(x/c) = 1 − (s/c)².
//
// tanh is evaluated from exp of a non-positive argument, so a logit of any magnitude
// maps to a number in [−c, c] (±inf to ±c, NaN stays NaN) and the slope is ≥ 0. Its
// absolute error is a few ulp of c (the cancellation in 1 − e near 0), which is the
// error z already carries from rounding c·tanh to f32.
//
// The kept set's keep4 (the identity without one) follows.
//
// requires: Group, keep4, params

fn tanh_safe4(u: vec4<f32>) -> vec4<f32> {
    // tanh(u) = sign(u)·(1 − e)/(1 + e), e = exp(−2|u|) ∈ [0, 1]: no overflow
    let e = exp(-2.0 * abs(u));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, u < vec4<f32>(0.0));
}

fn cap4(x: vec4<f32>) -> vec4<f32> {
    let c = params.softcap;
    return keep4(c * tanh_safe4(x / c));
}

fn cap1(x: f32) -> f32 {
    return cap4(vec4<f32>(x)).x;
}

fn cap_group(g: Group) -> Group {
    return Group(cap4(g.a), cap4(g.b));
}

// g times ∂s/∂x at s = c·tanh(x/c): 1 − (s/c)²; a gradient of 0 stays 0 (p = 0 at a
// logit of −inf, whose s is −c and slope 0)
fn cap_chain4(s: vec4<f32>, g: vec4<f32>) -> vec4<f32> {
    let u = s / params.softcap;
    return g * max(1.0 - u * u, vec4<f32>(0.0));
}
