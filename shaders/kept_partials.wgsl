// row_partials.wgsl over a given kept set (docs/MATH.md#given-kept-sets): one
// workgroup per row takes the statistics of its kept ids that fall in these columns,
// K ∩ [col_offset, col_offset + vocab), and writes them as a partial (m, s, t, z_y)
// that combine.wgsl merges, as it merges column blocks and vocabulary shards. A row
// whose range is empty keeps every token: it is swept whole, as row_partials does.
//
// Beside the partial it leaves what the loss launch needs and cannot bind (WebGPU's
// eight storage buffers: sampler/kept.wgsl): the row's header and, for each kept id of
// these columns, the pair (id, logit bits). A kept set of n ids costs n scattered
// reads here and n writes in the loss launch; the rest of the row is written as zeros
// and never read.
//
// The CSR is the caller's word: its offsets are clamped into keep_ids, so that no read
// or write leaves the part's ids and pairs, whatever they hold. Ids outside [0, V)
// are never matched (the target check counts them as not kept).
//
// requires: KEPT_HEADER, Lanes, Params, RowAcc, WG_SIZE, acc_empty, acc_push, cap1, grid_index
// requires: lane_id, lane_range, load_logit, reduce_row, row_start, sampler_inv_tau
// requires: neg_inf, sampler_tau_slot, stats_sweep

// Params, the uniform block: declared in src/shader/abi/kept_partials.rs

@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> partials: array<vec4<f32>>;
// the part's CSR: rows + 1 offsets into its ids
@group(0) @binding(4) var<storage, read> keep_offsets: array<u32>;
@group(0) @binding(5) var<storage, read> keep_ids: array<u32>;
// headers and pairs (sampler/kept.wgsl's `kept`)
@group(0) @binding(6) var<storage, read_write> kept_out: array<vec2<u32>>;

var<workgroup> wg_range: vec2<u32>;
var<workgroup> wg_found: atomic<u32>;

// The row's ids: (first, count) within the part's, clamped to them.
fn kept_range(row: u32) -> vec2<u32> {
    let n = params.ids_len;
    let lo = min(keep_offsets[params.offsets_base + row], n);
    let hi = clamp(keep_offsets[params.offsets_base + row + 1u], lo, n);
    return vec2<u32>(lo, hi - lo);
}

// The lane's kept ids into its accumulator; their pairs written, and whether one of
// them is the target noted.
fn kept_sweep(lane: u32, base: u32, range: vec2<u32>, y: u32, inv_tau: f32) -> RowAcc {
    var acc = acc_empty();
    let r = lane_range(lane, range.y);
    for (var i = r.begin; i < r.end; i += r.step) {
        let id = keep_ids[params.ids_base + range.x + i];
        let at = params.pairs + range.x + i;
        if (id == y) {
            atomicOr(&wg_found, 1u);
        }
        // wrapping: an id left of these columns is a large column, not theirs
        let col = id - params.col_offset;
        if (col < params.vocab) {
            let x = load_logit(base + col);
            acc = acc_push(acc, cap1(x) * inv_tau);
            kept_out[at] = vec2<u32>(id, bitcast<u32>(x));
        } else {
            // every launch writes the id (the same): a pair of other columns is then
            // never taken for one of another call
            kept_out[at].x = id;
        }
    }
    return acc;
}

@compute @workgroup_size(WG_SIZE)
fn kept_partials(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lanes: Lanes,
) {
    let row = params.row_base + grid_index(wid, nwg);
    if (row >= params.row_end) {
        return;
    }
    let lane = lane_id(lanes);
    let base = row_start(params.x, row);
    let y = targets[row_start(params.y, row)];
    let inv_tau = sampler_inv_tau(row, params.inv_tau);
    if (lane == 0u) {
        wg_range = kept_range(row);
        // workgroup memory is not zeroed for us (shader/mod.rs): the last row's mark
        atomicStore(&wg_found, 0u);
    }
    let range = workgroupUniformLoad(&wg_range);
    var acc = acc_empty();
    if (range.y == 0u) {
        acc = stats_sweep(lane, base, params.vocab, inv_tau);
    } else {
        acc = kept_sweep(lane, base, range, y, inv_tau);
    }
    let total = reduce_row(lanes, acc);
    workgroupBarrier();
    let found = atomicLoad(&wg_found) != 0u;
    if (lane == 0u) {
        let col = y - params.col_offset;
        var z_y = 0.0;
        if (col < params.vocab) {
            z_y = cap1(load_logit(base + col)) * inv_tau;
        }
        partials[params.out_offset + row] = vec4<f32>(total.m, total.s, total.t, z_y);
        let h = KEPT_HEADER * (params.part_row + row);
        kept_out[h] = vec2<u32>(params.pairs + range.x, range.y);
        kept_out[h + 1u] = vec2<u32>(bitcast<u32>(sampler_tau_slot(row)), select(0u, 1u, found || range.y == 0u));
        kept_out[h + 2u] = vec2<u32>(bitcast<u32>(neg_inf()), 0u);
    }
}
