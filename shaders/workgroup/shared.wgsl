// Workgroup reduction of one row's accumulators through shared memory: a fixed
// binary tree, lane i takes lane i + s for s = WG_SIZE/2, ..., 1. The subgroup
// variant (workgroup/subgroup.wgsl) walks the same tree, so both give the same bits.
//
// requires: RowAcc, WG_SIZE, acc_combine

struct Lanes {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> wg_acc: array<RowAcc, WG_SIZE>;

// The lane's position in the tree, and the first element of the row it reads.
fn lane_id(l: Lanes) -> u32 {
    return l.index;
}

// Every lane gets the whole row's accumulator.
fn reduce_row(l: Lanes, mine: RowAcc) -> RowAcc {
    let id = lane_id(l);
    var a = mine;
    wg_acc[id] = a;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if (id < s) {
            a = acc_combine(a, wg_acc[id + s]);
            wg_acc[id] = a;
        }
        workgroupBarrier();
    }
    let total = wg_acc[0];
    workgroupBarrier(); // wg_acc may be reused by the caller
    return total;
}
