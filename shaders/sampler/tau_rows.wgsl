// The sampler's per-row temperatures (docs/MATH.md#the-samplers-distribution): row r of
// the part takes τ_r = temperatures[params.temps + r], a window of the caller's tensor
// (params.temps = NO_TEMPS: the call's scalar τ on every row; the binding is then any
// read-only buffer, never read), through sampler/tau_read.wgsl. Everything downstream
// reads z = s/τ_r.
//
// requires: params

@group(0) @binding(8) var<storage, read> temperatures: array<f32>;

fn row_tau(row: u32) -> f32 {
    return temperatures[params.temps + row];
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
