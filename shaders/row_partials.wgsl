// One shard's (or one column block's) share of the row statistics: one workgroup per
// row reads the row's columns once with the online accumulator (prelude.wgsl) and
// writes the partial (m, s, t) and the target's z where this shard owns it: 16 bytes a
// row, all that goes over the wire when the vocabulary is split (shards.rs).
// combine.wgsl merges the partials of every shard in rank order.
//
// The sweep and the tree are the row kernel's, so a shard's partial has the same bits
// whichever other rows or shards there are.
//
// requires: Lanes, Params, WG_SIZE, cap1, grid_index, lane_id, load_logit, reduce_row
// requires: row_start, sampler_inv_tau, stats_sweep

// Params, the uniform block: declared in src/shader/abi/row_partials.rs

@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> partials: array<vec4<f32>>;

@compute @workgroup_size(WG_SIZE)
fn row_partials(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lanes: Lanes,
) {
    let row = params.row_base + grid_index(wid, nwg);
    if (row >= params.row_end) {
        return;
    }
    let base = row_start(params.x, row);
    // the row's 1/τ (sampler/*.wgsl: the call's scalar unless temperatures are given)
    let inv_tau = sampler_inv_tau(row, params.inv_tau);
    let total = reduce_row(lanes, stats_sweep(lane_id(lanes), base, params.vocab, inv_tau));
    if (lane_id(lanes) == 0u) {
        // wrapping: an id left of this shard becomes a large column, not owned either
        let col = targets[row_start(params.y, row)] - params.col_offset;
        var z_y = 0.0;
        if (col < params.vocab) {
            z_y = cap1(load_logit(base + col)) * inv_tau;
        }
        partials[params.out_offset + row] = vec4<f32>(total.m, total.s, total.t, z_y);
    }
}
