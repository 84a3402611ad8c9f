// The sampler's given kept set in the row kernel's loss launch (SPEC "The sampler's
// distribution"). kept_partials.wgsl ran first: it took the row's statistics over the
// kept ids, and left in `kept` (bound here in place of the temperatures, which the
// storage-binding budget of WebGPU would not otherwise allow) a header per row and the
// kept (id, logit) pairs:
//
//   kept[2·at]      (first pair, count)   count 0: the row keeps every token
//   kept[2·at + 1]  (τ's bits, 0 for the scalar; 1 if the target is kept)
//   kept[first + i] (id, the logit's f32 bits) of the i-th kept id
//
// The gradient outside the set is 0: the loss launch writes the row's zeros, then the
// kept ids' values from the pairs (the logits themselves may be gone: in place, the
// zeros went over them).
//
// requires: params

@group(0) @binding(8) var<storage, read> kept: array<vec2<u32>>;

var<workgroup> wg_kept_count: u32;

fn kept_header(row: u32) -> vec4<u32> {
    let i = 2u * (params.part_row + row);
    return vec4<u32>(kept[i], kept[i + 1u]);
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
