// The unfused baseline the benchmarks compare against: the seed's PyTorch eager
// `compute_policy_loss` (log_softmax → gather → masked mean → backward), one simple
// kernel per op, with every intermediate materialised as PyTorch does:
//
//   log_softmax     x [T,V] → out [T,V] f32            (reads x twice, writes T×V)
//   gather          out[t, y_t] → logp [T]
//   masked_mean     loss = −Σ m·A·logp / Σ m; g_t = −m·A / Σ m      (one workgroup)
//   scatter_grad    zeros [T,V] with g_t at y_t (gather's backward)  (writes T×V)
//   log_softmax_bwd grad_x = grad_out − exp(out)·Σ_v grad_out       (reads 2×T×V, writes T×V)
//
// Not used by the library's loss; here to measure what fusion saves.
//
// requires: Lanes, Params, WG_SIZE, acc_empty, acc_lse, acc_push, grid_index, lane_id
// requires: load_logit, reduce_row, row_start, workgroup_sum

// Params, the uniform block: declared in src/shader/abi/baseline.rs

@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
// the [T,V] f32 intermediates
@group(0) @binding(3) var<storage, read_write> full_a: array<f32>;
@group(0) @binding(4) var<storage, read_write> full_b: array<f32>;
// per-row vectors: mask, advantage, logp, g; and the loss
@group(0) @binding(5) var<storage, read_write> rowvec: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> loss_out: array<f32>;

fn full_index(row: u32, v: u32) -> u32 {
    return params.full_offset + (row - params.row_base) * params.vocab + v;
}

@compute @workgroup_size(WG_SIZE)
fn log_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let row = params.row_base + grid_index(wid, nwg);
    if (row >= params.row_end) {
        return;
    }
    let lane = lane_id(lanes);
    let base = row_start(params.x, row);
    var acc = acc_empty();
    for (var v = lane; v < params.vocab; v += WG_SIZE) {
        acc = acc_push(acc, load_logit(base + v));
    }
    let lse = acc_lse(reduce_row(lanes, acc));
    for (var v = lane; v < params.vocab; v += WG_SIZE) {
        full_a[full_index(row, v)] = load_logit(base + v) - lse;
    }
}

@compute @workgroup_size(WG_SIZE)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = params.row_base + gid.x + gid.y * nwg.x * WG_SIZE;
    if (row >= params.row_end) {
        return;
    }
    rowvec[row].z = full_a[full_index(row, targets[params.y_offset + row])];
}

@compute @workgroup_size(WG_SIZE)
fn masked_mean(@builtin(local_invocation_index) lane: u32) {
    var num = 0.0;
    var den = 0.0;
    for (var r = lane; r < params.rows; r += WG_SIZE) {
        let v = rowvec[r];
        num += -v.x * v.y * v.z;
        den += v.x;
    }
    let n = workgroup_sum(lane, num);
    let d = workgroup_sum(lane, den);
    for (var r = lane; r < params.rows; r += WG_SIZE) {
        rowvec[r].w = select(0.0, -rowvec[r].x * rowvec[r].y / d, d > 0.0);
    }
    if (lane == 0u) {
        loss_out[0] = select(0.0, n / d, d > 0.0);
    }
}

@compute @workgroup_size(WG_SIZE)
fn scatter_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let row = params.row_base + grid_index(wid, nwg);
    if (row >= params.row_end) {
        return;
    }
    let y = targets[params.y_offset + row];
    let g = rowvec[row].w;
    for (var v = lane; v < params.vocab; v += WG_SIZE) {
        full_b[full_index(row, v)] = select(0.0, g, v == y);
    }
}

@compute @workgroup_size(WG_SIZE)
fn log_softmax_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let row = params.row_base + grid_index(wid, nwg);
    if (row >= params.row_end) {
        return;
    }
    var part = 0.0;
    for (var v = lane; v < params.vocab; v += WG_SIZE) {
        part += full_b[full_index(row, v)];
    }
    let s = workgroup_sum(lane, part);
    // the gradient overwrites out (full_a), as an in-place autograd buffer would
    for (var v = lane; v < params.vocab; v += WG_SIZE) {
        let i = full_index(row, v);
        full_a[i] = full_b[i] - exp(full_a[i]) * s;
    }
}
