// Sweep 1 of a row: each lane takes its groups of eight logits (lane_range over the
// row's whole groups, in order) into its partial row (prelude.wgsl's LaneAcc); lane 0
// takes the row's last, partial group after its own. Each group goes through the
// sampler's map first (sampler/*.wgsl: the softcap; the identity with it off). Lanes whose hot loop met a
// non-finite or an overflowing logit take their logits again exactly (the loop after
// the hot one). Whether any lane must is decided for the whole workgroup, so that a
// CPU adapter, which runs code no lane needs under a mask, can branch over it.
//
// requires: GROUP, LOG2E, LaneRange, RowAcc, acc_empty, acc_push_group, cap_group
// requires: lane_add, lane_empty, lane_finish, lane_ok, lane_range, load_group, load_tail

// Logits a lane takes in one step of its loop (scripts/gpu-isa.sh counts per logit).
const STATS_STEP: u32 = GROUP;

var<workgroup> wg_exact: atomic<u32>;

fn stats_sweep(lane: u32, xbase: u32, vocab: u32, inv_tau: f32) -> RowAcc {
    let c2 = inv_tau * LOG2E;
    let full = vocab / GROUP;
    let rest = vocab % GROUP;
    let tail = rest != 0u && lane == 0u;
    let r = lane_range(lane, full);
    var acc = lane_empty();
    for (var q = r.begin; q < r.end; q += r.step) {
        acc = lane_add(acc, cap_group(load_group(xbase, q)), GROUP, c2);
    }
    if (tail) {
        acc = lane_add(acc, cap_group(load_tail(xbase, full, rest)), rest, c2);
    }
    let ok = lane_ok(acc, c2);
    if (!ok) {
        atomicOr(&wg_exact, 1u);
    }
    var row = lane_finish(acc, inv_tau);
    if (workgroupUniformLoad(&wg_exact) != 0u) {
        if (!ok) {
            row = lane_exact(r, xbase, full, rest, tail, inv_tau);
        }
    }
    return row;
}

// The lane's logits one at a time with RowAcc (the rare rows' exact path).
fn lane_exact(r: LaneRange, xbase: u32, full: u32, rest: u32, tail: bool, inv_tau: f32) -> RowAcc {
    var exact = acc_empty();
    for (var q = r.begin; q < r.end; q += r.step) {
        exact = acc_push_group(exact, cap_group(load_group(xbase, q)), inv_tau);
    }
    if (tail) {
        exact = acc_push_group(exact, cap_group(load_tail(xbase, full, rest)), inv_tau);
    }
    return exact;
}
