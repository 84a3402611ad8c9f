// The call's one temperature on every row (no per-row temperatures): the scalar 1/τ,
// no row flag. The functions are the identity on what they are given, so a module
// joined from this file and cap_none.wgsl compiles to the loops of one without the
// sampler's options (scripts/gpu-isa.sh) and gives the plain softmax's bits.

fn sampler_inv_tau(row: u32, scalar: f32) -> f32 {
    return scalar;
}

fn sampler_flags(flags: f32, row: u32, read: bool) -> f32 {
    return flags;
}

fn sampler_tau_slot(row: u32) -> f32 {
    return 0.0;
}

// the gradient's w/τ
fn row_scale(w: f32, inv_tau: f32) -> f32 {
    return w * inv_tau;
}

// No kept set: every token is kept (sampler/kept.wgsl has the kept set's).
fn sampler_row(row: u32, inv_tau: f32) {}

fn keep4(s: vec4<f32>) -> vec4<f32> {
    return s;
}

fn kept_target(row: u32) -> bool {
    return true;
}

fn kept_count(lane: u32, row: u32) -> u32 {
    return 0u;
}

fn kept_pair(row: u32, i: u32) -> vec2<u32> {
    return vec2<u32>(0u);
}
