// Workgroup reduction with subgroup shuffles for the last log2(subgroup size) levels
// of the same tree as workgroup/shared.wgsl. Lanes are numbered subgroup-major
// (subgroup_id * subgroup_size + subgroup_invocation_id), so the tree's lanes
// 0..sg-1 are exactly subgroup 0 in lane order, and the shuffle-xor by s pairs lane i
// with lane i + s as the shared-memory tree does: the bits are the same.
//
// requires: RowAcc, WG_SIZE, acc_combine

struct Lanes {
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
}

var<workgroup> wg_acc: array<RowAcc, WG_SIZE>;
var<workgroup> wg_sg_size: u32;

fn lane_id(l: Lanes) -> u32 {
    return l.sg_id * l.sg_size + l.sg_lane;
}

fn reduce_row(l: Lanes, mine: RowAcc) -> RowAcc {
    let id = lane_id(l);
    var a = mine;
    if (id == 0u) {
        wg_sg_size = l.sg_size;
    }
    wg_acc[id] = a;
    // a uniform copy of the subgroup size, so the loops below stay in uniform control flow
    let sg = workgroupUniformLoad(&wg_sg_size);
    for (var s = WG_SIZE / 2u; s >= sg; s >>= 1u) {
        if (id < s) {
            a = acc_combine(a, wg_acc[id + s]);
            wg_acc[id] = a;
        }
        workgroupBarrier();
    }
    for (var s = sg / 2u; s > 0u; s >>= 1u) {
        let other = RowAcc(
            subgroupShuffleXor(a.m, s),
            subgroupShuffleXor(a.s, s),
            subgroupShuffleXor(a.t, s),
        );
        a = acc_combine(a, other);
    }
    if (id == 0u) {
        wg_acc[0] = a;
    }
    workgroupBarrier();
    let total = wg_acc[0];
    workgroupBarrier();
    return total;
}
