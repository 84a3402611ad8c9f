// Sweep 1 of a row, one element per lane and step, the lane's elements given by
// lane_range (prelude.wgsl), in order.
fn stats_sweep(lane: u32, xbase: u32, vocab: u32, inv_tau: f32) -> RowAcc {
    var acc = acc_empty();
    let r = lane_range(lane, vocab);
    for (var v = r.begin; v < r.end; v += r.step) {
        acc = acc_push(acc, load_logit(xbase + v) * inv_tau);
    }
    return acc;
}
