// Sweep 1 of a row, four elements per lane and step: the lane's quads of the row
// (lane_range; xbase is a multiple of 4), elements in order within a quad. The last
// quad may run past the row: those elements enter as -inf, which leaves the
// accumulator's bits unchanged.
fn stats_sweep(lane: u32, xbase: u32, vocab: u32, inv_tau: f32) -> RowAcc {
    var acc = acc_empty();
    let q0 = xbase >> 2u;
    let quads = (vocab + 3u) >> 2u;
    let ninf = neg_inf();
    let r = lane_range(lane, quads);
    for (var q = r.begin; q < r.end; q += r.step) {
        let z = load_quad(q0 + q) * inv_tau;
        let v = q * 4u;
        acc = acc_push(acc, z.x);
        acc = acc_push(acc, select(ninf, z.y, v + 1u < vocab));
        acc = acc_push(acc, select(ninf, z.z, v + 2u < vocab));
        acc = acc_push(acc, select(ninf, z.w, v + 3u < vocab));
    }
    return acc;
}
