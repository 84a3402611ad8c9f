// One workgroup, before the row kernel: gathers each row's mask, advantage and old/ref
// log-probs into one vec4 (so the row kernel needs one binding for them), and computes
// the aggregation weight of each sequence, w_r = m_r · c_b
// (docs/MATH.md#aggregation-and-presets). O(rows) work, spread over every lane however
// the rows fall into sequences (teams of lanes per sequence, workgroup/sum.wgsl); sums
// run in a fixed order, so weights are bitwise reproducible.
//
// requires: ADV_PER_TOKEN, COUNT_EMPTY, GATHER, HAS_OLD, HAS_REF, HAS_ROLLOUT
// requires: PRIMITIVE, Params, WEIGHTS, WG_SIZE, mask_in, team_rows
// requires: team_sum, write_weights

// Params, the uniform block: declared in src/shader/abi/prepare.rs

// and its flags (HAS_OLD, HAS_REF, ADV_PER_TOKEN, COUNT_EMPTY, HAS_ROLLOUT) and phases
// (GATHER, WEIGHTS)

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read> advantages: array<f32>;
@group(0) @binding(3) var<storage, read> old_logp: array<f32>;
@group(0) @binding(4) var<storage, read> ref_logp: array<f32>;
@group(0) @binding(5) var<storage, read_write> rowin: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> seqinfo: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> rollout_logp: array<f32>;
// two vec4 a row (select.wgsl): the first starts with the sampler's log-prob
@group(0) @binding(8) var<storage, read_write> rowaux: array<vec4<f32>>;

@compute @workgroup_size(WG_SIZE)
fn prepare(@builtin(local_invocation_index) lane: u32) {
    if ((params.phase & GATHER) != 0u) {
        gather(lane);
        // n_b was written by the first lane of b's team
        storageBarrier();
    }
    if ((params.phase & WEIGHTS) != 0u) {
        weights(lane);
    }
}

fn gather(lane: u32) {
    let per_token = (params.flags & ADV_PER_TOKEN) != 0u;
    for (var r = lane; r < params.part.rows; r += WG_SIZE) {
        var v = vec4<f32>(mask[params.mask_offset + r], 0.0, 0.0, 0.0);
        v.y = advantages[params.adv_offset + select(r / params.part.rows_per_seq, r, per_token)];
        if ((params.flags & HAS_OLD) != 0u) {
            v.z = old_logp[params.old_offset + r];
        }
        if ((params.flags & HAS_REF) != 0u) {
            v.w = ref_logp[params.ref_offset + r];
        }
        if ((params.flags & PRIMITIVE) != 0u) {
            v = primitive_row(v);
        }
        rowin[params.part.part_row + r] = v;
        if ((params.flags & HAS_ROLLOUT) != 0u) {
            rowaux[2u * (params.part.part_row + r)].x = rollout_logp[params.rollout_offset + r];
        }
    }

    // n_b: the team of sequence b sums its rows, each lane a strided part in order (the
    // team's size depends on the sequence's length alone, so n_b's bits do not depend
    // on the rest of the batch or on how it is split into parts)
    for (var k = 0u; k < params.teams.rounds; k++) {
        let tr = team_rows(params.teams, lane, k, params.part.seqs, params.part.rows_per_seq, params.part.rows);
        var part = 0.0;
        for (var r = tr.begin; r < tr.end; r += tr.step) {
            // a mask ≤ 0 is a row outside the loss, and so is a bad one (prelude.wgsl)
            let m = mask[params.mask_offset + r];
            part += select(0.0, m, mask_in(m));
        }
        let n = team_sum(lane, params.teams.size, vec2<f32>(part, 0.0)).x;
        if (tr.lead) {
            seqinfo[params.part.part_seq + tr.seq] = vec4<f32>(n, 1.0, 0.0, 0.0);
        }
    }
}

// The log-prob primitive (docs/MATH.md#the-log-prob-primitive): the advantage's, old's
// and ref's bindings hold its upstream a = ∂L/∂logp, b = ∂L/∂H and c = ∂L/∂lse. A row
// is read where any is not 0 (a NaN is not 0: bad input, reported); a comes as
// reinforce's advantage −a, so that the row kernel's G is a.
fn primitive_row(v: vec4<f32>) -> vec4<f32> {
    let read = v.y != 0.0 || v.z != 0.0 || v.w != 0.0;
    return vec4<f32>(select(0.0, 1.0, read), -v.y, v.z, v.w);
}

fn weights(lane: u32) {
    write_weights(lane, params.agg_mode, params.all_seqs, params.global_normalizer, params.l_norm, (params.flags & COUNT_EMPTY) != 0u, 0u, 0u);
}
