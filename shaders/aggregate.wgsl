// The aggregation weight factor c_b of a sequence (docs/MATH.md#aggregation-and-presets):
// w_r = m_r·c_b.
// Shared by prepare.wgsl (the weights of m) and select.wgsl (the top-entropy mask's
// renormalised weights of m·e); both declare `seqinfo`, a vec4 per sequence.
//
// requires: AGG_SEQ_MEAN_TOKEN_MEAN, AGG_SEQ_MEAN_TOKEN_SUM, AGG_TOKEN_MEAN
// requires: AGG_TOKEN_SUM, WG_SIZE, seqinfo, team_sum

// The modes' codes (AGG_*) are kernels/mod.rs's.

struct Aggregation {
    mode: u32,
    // every sequence of the call
    seqs: u32,
    // the mask's sum over the call, and the sequences B' the seq-mean modes divide by
    total: f32,
    nonempty: f32,
    // token-mean's caller-given normaliser (0: none), seq-mean-token-sum-norm's L_norm
    global_normalizer: f32,
    l_norm: f32,
}

fn inv_or_zero(d: f32) -> f32 {
    return select(0.0, 1.0 / d, d > 0.0);
}

// c_b of a sequence whose mask sums to n.
fn seq_weight(a: Aggregation, n: f32) -> f32 {
    if (a.mode == AGG_TOKEN_MEAN) {
        return inv_or_zero(select(a.total, a.global_normalizer, a.global_normalizer > 0.0));
    }
    if (a.mode == AGG_SEQ_MEAN_TOKEN_MEAN) {
        return inv_or_zero(n * a.nonempty);
    }
    if (a.mode == AGG_SEQ_MEAN_TOKEN_SUM) {
        return inv_or_zero(a.nonempty);
    }
    if (a.mode == AGG_TOKEN_SUM) {
        return 1.0;
    }
    return inv_or_zero(f32(a.seqs) * a.l_norm);
}

// From each sequence's mask sum in slot `src` of seqinfo, every sequence's c_b into
// slot `dst`: the totals first (Σ over sequences in order, lane-strided, then a fixed
// tree), so the weights' bits do not depend on how the batch came in parts; with
// `count_empty`, B' counts every sequence.
fn write_weights(lane: u32, mode: u32, seqs: u32, global_normalizer: f32, l_norm: f32, count_empty: bool, src: u32, dst: u32) {
    var tokens = 0.0;
    var nonempty = 0.0;
    for (var b = lane; b < seqs; b += WG_SIZE) {
        let n = seqinfo[b][src];
        tokens += n;
        nonempty += select(0.0, 1.0, n > 0.0);
    }
    let totals = team_sum(lane, WG_SIZE, vec2<f32>(tokens, nonempty));
    let agg = Aggregation(
        mode,
        seqs,
        totals.x,
        select(totals.y, f32(seqs), count_empty),
        global_normalizer,
        l_norm,
    );
    // each lane rewrites the sequences it read above, so no barrier is needed
    for (var b = lane; b < seqs; b += WG_SIZE) {
        seqinfo[b][dst] = seq_weight(agg, seqinfo[b][src]);
    }
}
