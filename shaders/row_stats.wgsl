// One workgroup per logits row: a single read of the row with the online
// log-sum-exp accumulator (prelude.wgsl), then per row the log-sum-exp, the
// target's log-prob and the entropy of the tempered distribution.
//
// The sweep (stats/*.wgsl) gives each lane a fixed part of the row in a fixed order,
// and the reduction tree is fixed, so a row's bits never depend on which other rows
// share the dispatch.
//
// requires: Lanes, Params, WG_SIZE, acc_entropy, acc_logp, acc_lse, grid_index
// requires: lane_id, load_logit, quiet_nan, reduce_row, row_start, stats_sweep

// Params, the uniform block: declared in src/shader/abi/row_stats.rs

@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> out_lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_logp: array<f32>;
@group(0) @binding(5) var<storage, read_write> out_entropy: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn row_stats(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lanes: Lanes,
) {
    let row = params.row_base + grid_index(wid, nwg);
    if (row >= params.row_end) {
        return;
    }
    let base = row_start(params.x, row);

    let acc = stats_sweep(lane_id(lanes), base, params.vocab, params.inv_tau);
    let total = reduce_row(lanes, acc);

    if (lane_id(lanes) == 0u) {
        let y = targets[row_start(params.y, row)];
        // an id outside the row gives NaN, never another row's logit; the host API
        // checks ids and reports the first bad row before it gets here
        var logp = quiet_nan();
        if (y < params.vocab) {
            logp = acc_logp(total, load_logit(base + y) * params.inv_tau);
        }
        out_lse[params.lse_offset + row] = acc_lse(total);
        out_logp[params.logp_offset + row] = logp;
        out_entropy[params.entropy_offset + row] = acc_entropy(total);
    }
}
