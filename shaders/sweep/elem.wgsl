// The second sweep over a row, one element per lane and step (f32 gradients): read
// the logit again (usually from cache), write its gradient once.
fn grad_sweep(lane: u32, xbase: u32, gbase: u32, k: GradCoefs) {
    for (var v = lane; v < k.vocab; v += WG_SIZE) {
        grad_store(gbase + v, grad_at(xbase, v, k));
    }
}
