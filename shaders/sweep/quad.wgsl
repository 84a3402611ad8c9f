// The second sweep over a row four at a time: read a quad of logits, write a quad of
// gradient (f32 or 16-bit; both rows start on quad boundaries). The row's last quad
// may be partial: its elements past the row are not written.
fn grad_sweep(lane: u32, xbase: u32, gbase: u32, k: GradCoefs) {
    let quads = (k.vocab + 3u) >> 2u;
    let r = lane_range(lane, quads);
    for (var q = r.begin; q < r.end; q += r.step) {
        let v = q * 4u;
        var g = vec4<f32>(0.0);
        if (k.scale != 0.0) {
            let z = load_quad((xbase >> 2u) + q) * params.inv_tau;
            let p = exp(z - vec4<f32>(k.lse));
            // p = 0 for z = -inf, where c1·z would make 0 · -inf
            g = select(p * (vec4<f32>(k.c0) + k.c1 * z), vec4<f32>(0.0), p == vec4<f32>(0.0));
            g += select(vec4<f32>(0.0), vec4<f32>(k.at_target), vec4<u32>(v, v + 1u, v + 2u, v + 3u) == vec4<u32>(k.y));
        }
        grad_store_quad((gbase >> 2u) + q, g, min(4u, k.vocab - v));
    }
}
