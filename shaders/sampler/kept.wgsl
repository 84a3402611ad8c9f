// The sampler's kept set in the row kernel's loss launch
// (docs/MATH.md#the-samplers-distribution), given or computed. A kernel ran first and
// left in `kept` (bound here in place of the temperatures, which the storage-binding
// budget of WebGPU would not otherwise allow) a header of KEPT_HEADER items per row,
// and kept (id, logit) pairs:
//
//   kept[h]         (first pair, count)   count 0: the sweeps below decide
//   kept[h + 1]     (τ's bits, 0 for the scalar; 1 if the target is kept)
//   kept[h + 2]     (θ's bits, -): the sweeps keep s ≥ θ (−inf: every token)
//   kept[first + i] (id, the logit's f32 bits) of the i-th kept id
//
// A given set (kept_partials.wgsl, which also took the row's statistics over it) lists
// its ids, θ = −inf. A computed one (kept_select.wgsl: top-k, top-p, min-p) is
// K = {s ≥ θ}, swept whole, and lists its one token where it keeps only one (h + 3).
//
// The gradient outside the set is 0. With a list, the loss launch writes the row's
// zeros, then the kept ids' values from the pairs (the logits themselves may be gone:
// in place, the zeros went over them). With θ, each s below it becomes a number 128
// nats below θ: its exp is exactly 0 in f32 (the gradient 0, no mass), yet finite, so
// that the sweeps' fast path holds, which −inf would send to the exact loop.
//
// requires: KEPT_HEADER, params

@group(0) @binding(8) var<storage, read> kept: array<vec2<u32>>;

var<workgroup> wg_kept_count: u32;
var<private> keep_floor: f32;
var<private> keep_below: f32;

fn kept_header(row: u32) -> vec4<u32> {
    let i = KEPT_HEADER * (params.part_row + row);
    return vec4<u32>(kept[i], kept[i + 1u]);
}

// The row's θ, for keep4.
fn sampler_row(row: u32, inv_tau: f32) {
    keep_floor = bitcast<f32>(kept[KEPT_HEADER * (params.part_row + row) + 2u].x);
    keep_below = keep_floor - 128.0 / inv_tau;
}

// s below θ out of the set (sampler/cap_*.wgsl map through this)
fn keep4(s: vec4<f32>) -> vec4<f32> {
    return select(s, vec4<f32>(keep_below), s < vec4<f32>(keep_floor));
}

// the row's temperature for sampler/tau_read.wgsl
fn row_tau(row: u32) -> f32 {
    return bitcast<f32>(kept_header(row).z);
}

// Whether the row's target is in its kept set (a set of every token: always).
fn kept_target(row: u32) -> bool {
    return kept_header(row).w != 0u;
}

// The row's kept ids, the same for every lane (the loss launch branches on it around
// its barriers): 0 where the row keeps every token.
fn kept_count(lane: u32, row: u32) -> u32 {
    if (lane == 0u) {
        wg_kept_count = kept_header(row).y;
    }
    return workgroupUniformLoad(&wg_kept_count);
}

// The row's i-th kept (id, logit bits).
fn kept_pair(row: u32, i: u32) -> vec2<u32> {
    return kept[kept_header(row).x + i];
}
