// The second sweep over a row, a group of eight at a time: each lane reads its groups
// again (mostly from cache) and writes their gradient once, through the storage
// snippet's store_group (in place, or into the gradient's buffer); lane 0 writes the
// row's last, partial group. The target's term is added outside the loop: the lane
// that holds the target writes that one element again afterwards (reading its logit
// first: in place it is the element's only writer). A row whose coefficients are not
// all finite numbers (GradCoefs.fast) takes the exact loop after the hot one, where a
// gradient may be NaN; in the hot loop none can be.
//
// requires: GROUP, GradCoefs, Group, at_target4, grad_any, grad_exact, grad_quad
// requires: item_lane, lane_range, load_group, load_logit, load_tail, store_elem
// requires: store_group

// Logits a lane takes in one step of its loop (scripts/gpu-isa.sh counts per logit).
const GRAD_STEP: u32 = GROUP;

// The first n (< 8) elements of a row's last group, one at a time: the padding past
// the row keeps its bits.
fn store_tail(gbase: u32, q: u32, g: Group, n: u32) {
    let v = array<f32, 8>(g.a.x, g.a.y, g.a.z, g.a.w, g.b.x, g.b.y, g.b.z, g.b.w);
    for (var j = 0u; j < n; j++) {
        store_elem(gbase + q * GROUP + j, v[j]);
    }
}

fn grad_sweep(lane: u32, xbase: u32, gbase: u32, k: GradCoefs) {
    let full = k.vocab / GROUP;
    let rest = k.vocab % GROUP;
    let r = lane_range(lane, full);
    if (k.scale == 0.0) {
        // a row outside the loss: zeros, and nothing read
        let zero = Group(vec4<f32>(0.0), vec4<f32>(0.0));
        for (var q = r.begin; q < r.end; q += r.step) {
            store_group(gbase, q, zero, true);
        }
        if (rest != 0u && lane == 0u) {
            store_tail(gbase, full, zero, rest);
        }
        return;
    }
    let qy = k.y / GROUP;
    let holds_target = k.y < k.vocab && lane == select(item_lane(qy, full), 0u, qy >= full);
    var xy = 0.0;
    if (holds_target) {
        xy = load_logit(xbase + k.y);
    }
    if (k.fast) {
        for (var q = r.begin; q < r.end; q += r.step) {
            let x = load_group(xbase, q);
            store_group(gbase, q, Group(grad_quad(x.a, k), grad_quad(x.b, k)), true);
        }
    } else {
        for (var q = r.begin; q < r.end; q += r.step) {
            let x = load_group(xbase, q);
            store_group(gbase, q, Group(grad_exact(x.a, k), grad_exact(x.b, k)), false);
        }
    }
    if (rest != 0u && lane == 0u) {
        let x = load_tail(xbase, full, rest);
        store_tail(gbase, full, Group(grad_any(x.a, k), grad_any(x.b, k)), rest);
    }
    if (holds_target) {
        store_elem(gbase + k.y, grad_any(vec4<f32>(xy), k).x + at_target4(vec4<f32>(xy), k).x);
    }
}
