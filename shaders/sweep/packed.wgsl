// The second sweep over a row for 16-bit gradients packed two to a u32: one word per
// lane and step (lane_range), so no two lanes write the same word. Elements gbase .. gbase+V-1 of
// the gradient cover words gbase/2 .. (gbase+V-1)/2; an edge word's other half belongs
// to the neighbouring row and is left alone.
fn grad_sweep(lane: u32, xbase: u32, gbase: u32, k: GradCoefs) {
    let gend = gbase + k.vocab;
    let first = gbase >> 1u;
    let last = (gend - 1u) >> 1u;
    let r = lane_range(lane, last - first + 1u);
    for (var i = r.begin; i < r.end; i += r.step) {
        let w = first + i;
        let e = w * 2u;
        var bits = 0u;
        var mask = 0u;
        if (e >= gbase) {
            bits |= encode_grad16(grad_at(xbase, e - gbase, k));
            mask |= 0xffffu;
        }
        if (e + 1u < gend) {
            bits |= encode_grad16(grad_at(xbase, e + 1u - gbase, k)) << 16u;
            mask |= 0xffff0000u;
        }
        grad_word_update(w, bits, mask);
    }
}
