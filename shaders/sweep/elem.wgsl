// The second sweep over a row, one element per lane and step (f32 gradients): read
// the logit again (usually from cache), write its gradient once.
fn grad_sweep(lane: u32, xbase: u32, gbase: u32, k: GradCoefs) {
    let r = lane_range(lane, k.vocab);
    for (var v = r.begin; v < r.end; v += r.step) {
        grad_store(gbase + v, grad_at(xbase, v, k));
    }
}
