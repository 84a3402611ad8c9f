// The second sweep over a row for 16-bit gradients packed two to a u32 whose rows may
// share a word with a neighbouring row (odd strides): the row's gradient elements
// gbase .. gend - 1 cover words gbase/2 .. (gend - 1)/2. Its whole words go four at a
// time to the lanes (a group of eight logits each, realigned by load8 where gradient
// and logits rows lie differently), written with plain atomic stores. Lane 0 takes the
// rest, one word at a time: the whole words past the last four and the edge words,
// whose other half belongs to the neighbour and is left alone (and, or). The target's
// term is added outside the loop: the lane that holds the target's word writes it
// again afterwards.
//
// requires: GROUP, GradCoefs, Group, at_target4, grad_any, grad_exact, grad_quad
// requires: grad_word_store4, grad_word_update, item_lane, lane_range, load8
// requires: load_logit, pack2_grad16, pack_group16

// Logits a lane takes in one step of its loop (scripts/gpu-isa.sh counts per logit).
const GRAD_STEP: u32 = GROUP;

// The gradient bits of word w of the gradient and the mask of its halves in the row;
// with the target's term where `with_target`. Logits are read only within the row.
fn word_grad(w: u32, xbase: u32, gbase: u32, k: GradCoefs, with_target: bool) -> vec2<u32> {
    // the word's two elements as columns of the row (wrapping: outside it past either
    // edge)
    let v = vec2<u32>(w * 2u - gbase, w * 2u + 1u - gbase);
    let inside = v < vec2<u32>(k.vocab);
    var g = vec2<f32>(0.0);
    if (k.scale != 0.0) {
        let at = min(v, vec2<u32>(k.vocab - 1u));
        let x = vec4<f32>(load_logit(xbase + at.x), load_logit(xbase + at.y), 0.0, 0.0);
        g = grad_any(x, k).xy;
        g += select(vec2<f32>(0.0), at_target4(x, k).xy, vec2<bool>(with_target) & (v == vec2<u32>(k.y)));
    }
    let mask = select(0u, 0xffffu, inside.x) | select(0u, 0xffff0000u, inside.y);
    return vec2<u32>(pack2_grad16(g.x, g.y, false) & mask, mask);
}

fn grad_sweep(lane: u32, xbase: u32, gbase: u32, k: GradCoefs) {
    let gend = gbase + k.vocab;
    // whole words w0 .. w1 - 1, in groups of four; e0 is w0's first element in the row
    let w0 = (gbase + 1u) >> 1u;
    let w1 = gend >> 1u;
    let groups = (w1 - w0) / 4u;
    let e0 = 2u * w0 - gbase;
    let r = lane_range(lane, groups);
    // the target's word: which lane writes it again (its group's, or lane 0)
    let wy = (gbase + k.y) >> 1u;
    let in_groups = wy >= w0 && wy < w0 + 4u * groups;
    let owner = select(0u, item_lane((wy - w0) / 4u, groups), in_groups);
    let holds_target = k.y < k.vocab && k.scale != 0.0 && lane == owner;
    // in place the loop overwrites the target's logits: its word's gradient first
    var fix = vec2<u32>(0u);
    if (holds_target) {
        fix = word_grad(wy, xbase, gbase, k, true);
    }
    if (k.scale == 0.0) {
        for (var q = r.begin; q < r.end; q += r.step) {
            grad_word_store4(w0 + 4u * q, vec4<u32>(0u));
        }
    } else if (k.fast) {
        for (var q = r.begin; q < r.end; q += r.step) {
            let x = load8(xbase + e0 + q * GROUP);
            grad_word_store4(w0 + 4u * q, pack_group16(Group(grad_quad(x.a, k), grad_quad(x.b, k)), true));
        }
    } else {
        for (var q = r.begin; q < r.end; q += r.step) {
            let x = load8(xbase + e0 + q * GROUP);
            grad_word_store4(w0 + 4u * q, pack_group16(Group(grad_exact(x.a, k), grad_exact(x.b, k)), false));
        }
    }
    if (lane == 0u) {
        // the words outside the groups: gbase/2 (an edge when gbase is odd) up to w0,
        // the whole words past the groups, and w1 (an edge when gend is odd)
        let first = gbase >> 1u;
        let last = (gend - 1u) >> 1u;
        for (var w = first; w <= last; w++) {
            if (w >= w0 && w < w0 + 4u * groups) {
                w = w0 + 4u * groups - 1u;
                continue;
            }
            let b = word_grad(w, xbase, gbase, k, false);
            grad_word_update(w, b.x, b.y);
        }
    }
    if (holds_target) {
        grad_word_update(wy, fix.x, fix.y);
    }
}
