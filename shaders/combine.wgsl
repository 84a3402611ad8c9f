// The partial row statistics of every shard of a split vocabulary (row_partials.wgsl),
// gathered in rank order, merged into the statistics of the whole row: one lane per
// row, O(shards) work, no logits read.
//
//   M = max m_k,   S = Σ s_k e^{m_k − M},   T = Σ (t_k + s_k (m_k − M)) e^{m_k − M}
//
// summed in rank order (acc_rescale of prelude.wgsl, so -inf and NaN rows follow the
// row kernel's rules), each shard rescaled once to the common maximum. The order is
// fixed, so every rank that combines the same partials gets the same bits.
//
// STATS writes what the row kernel's statistics launch writes to rowout (log-prob,
// entropy, lse; the log-prob from the shard that owns the target, NaN where none
// does); PARTIAL writes the merged partial itself (column blocks of one shard merged
// into that shard's partial); ROW_STATS writes row_stats.wgsl's three outputs (the
// column blocks of rows longer than one binding).
//
// requires: LOWEST, MODE_PARTIAL, MODE_STATS, Params, RowAcc, WG_SIZE, acc_entropy
// requires: acc_logp, acc_lse, acc_rescale, grid_index, quiet_nan, row_start

// Params, the uniform block: declared in src/shader/abi/combine.rs
// and its modes (MODE_STATS, MODE_PARTIAL, MODE_ROW_STATS)

@group(0) @binding(0) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
// the shards' first columns, and the vocabulary's end: shard k owns starts[k] ..
// starts[k + 1]
@group(0) @binding(3) var<storage, read> starts: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out_lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> out_logp: array<f32>;
@group(0) @binding(7) var<storage, read_write> out_entropy: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn combine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = params.row_base + grid_index(wid, nwg) * WG_SIZE + lane;
    if (row >= params.row_end) {
        return;
    }
    let first = params.in_offset + row;
    var m = LOWEST;
    for (var k = 0u; k < params.shards; k++) {
        m = max(m, partials[first + k * params.in_stride].x);
    }
    let y = targets[row_start(params.y, row)];
    var total = RowAcc(m, 0.0, 0.0);
    var z_y = 0.0;
    var owned = false;
    for (var k = 0u; k < params.shards; k++) {
        let p = partials[first + k * params.in_stride];
        let a = acc_rescale(RowAcc(p.x, p.y, p.z), m);
        total.s += a.s;
        total.t += a.t;
        if (y >= starts[k] && y < starts[k + 1u]) {
            z_y = p.w;
            owned = true;
        }
    }
    if (params.mode == MODE_PARTIAL) {
        out[params.out_offset + row] = vec4<f32>(total.m, total.s, total.t, z_y);
        return;
    }
    // an id no shard owns (outside the vocabulary) has no log-prob: NaN, which the
    // loss launch reports as a bad id
    var logp = quiet_nan();
    if (owned) {
        logp = acc_logp(total, z_y);
    }
    if (params.mode == MODE_STATS) {
        let at = 2u * (params.part_row + row);
        out[at] = vec4<f32>(logp, acc_entropy(total), acc_lse(total), 0.0);
        out[at + 1u] = vec4<f32>(0.0);
    } else {
        out_lse[params.lse_offset + row] = acc_lse(total);
        out_logp[params.logp_offset + row] = logp;
        out_entropy[params.entropy_offset + row] = acc_entropy(total);
    }
}
