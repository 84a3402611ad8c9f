// Plain f32 sums over the workgroup, or over teams of lanes, along a fixed tree (lane
// i takes lane i + s), so they are bitwise reproducible.
//
// Teams serve segmented sums (a sequence's rows, a group's rewards): a team of `size`
// consecutive lanes takes one segment, each lane a strided part of it in order, and
// the tree runs inside the team. One lane walking a whole segment would be a loop as
// long as the segment on one GPU thread: 131,072 dependent loads for one long
// sequence, and wrong results on Mesa's llvmpipe and lavapipe, which end a shader's
// loops after 65,535 iterations in all.
//
// requires: Teams, WG_SIZE

var<workgroup> wg_sum: array<vec2<f32>, WG_SIZE>;

// The sum of v over the lane's team (lanes [k·size, (k+1)·size), size a power of two
// ≤ WG_SIZE and uniform): every lane of the team gets it. All lanes must call it.
fn team_sum(lane: u32, size: u32, v: vec2<f32>) -> vec2<f32> {
    wg_sum[lane] = v;
    workgroupBarrier();
    let i = lane & (size - 1u);
    for (var s = size / 2u; s > 0u; s >>= 1u) {
        if (i < s) {
            wg_sum[lane] += wg_sum[lane + s];
        }
        workgroupBarrier();
    }
    let total = wg_sum[lane - i];
    workgroupBarrier(); // wg_sum may be reused by the caller
    return total;
}

// Every lane gets the workgroup's total.
fn workgroup_sum(lane: u32, v: f32) -> f32 {
    return team_sum(lane, WG_SIZE, vec2<f32>(v, 0.0)).x;
}

// How segments are dealt to teams (`Teams`, declared in src/shader/abi/): `size` lanes a
// segment, WG_SIZE / size segments a round, `rounds` rounds.

// The segment lane `lane` works on in round k, and its index inside the team.
fn team_segment(t: Teams, lane: u32, k: u32) -> vec2<u32> {
    return vec2<u32>(k * (WG_SIZE / t.size) + lane / t.size, lane & (t.size - 1u));
}

// A lane's rows of its team's sequence in round k, sequences being runs of
// rows_per_seq rows (the last cut at `rows`): r = begin, begin + step, ... < end, in
// order; empty where the round has no sequence `seq` < seqs for the team. `lead`: the
// lane that writes the team's result.
struct TeamRows {
    seq: u32,
    begin: u32,
    end: u32,
    step: u32,
    lead: bool,
}

fn team_rows(t: Teams, lane: u32, k: u32, seqs: u32, rows_per_seq: u32, rows: u32) -> TeamRows {
    let at = team_segment(t, lane, k);
    let b = at.x;
    let end = select(0u, min((b + 1u) * rows_per_seq, rows), b < seqs);
    return TeamRows(b, b * rows_per_seq + at.y, end, t.size, at.y == 0u && b < seqs);
}
