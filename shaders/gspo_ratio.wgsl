// One workgroup, between GSPO's two row launches: the sequence-level ratio
// s_b = exp(clamp(Σ_t m·(logp − old_logp) / Σ_t m, −20, 20)). A team of lanes takes
// each sequence (workgroup/sum.wgsl), each lane a strided part of its rows in order,
// then a fixed tree: the bits are reproducible and no lane walks a whole sequence.
//
// requires: OUT_LOGP, Params, ROWOUT_FLOATS, WG_SIZE, clamp_keep_nan, mask_in
// requires: team_rows, team_sum

// Params, the uniform block: declared in src/shader/abi/gspo_ratio.rs

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rowin: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rowout: array<array<f32, ROWOUT_FLOATS>>;
@group(0) @binding(3) var<storage, read_write> seqinfo: array<vec4<f32>>;

@compute @workgroup_size(WG_SIZE)
fn gspo_ratio(@builtin(local_invocation_index) lane: u32) {
    for (var k = 0u; k < params.teams.rounds; k++) {
        let tr = team_rows(params.teams, lane, k, params.part.seqs, params.part.rows_per_seq, params.part.rows);
        // (Σ m·(logp − old_logp), Σ m) over this lane's rows of sequence b
        var part = vec2<f32>(0.0, 0.0);
        for (var r = tr.begin; r < tr.end; r += tr.step) {
            let i = rowin[params.part.part_row + r];
            if (mask_in(i.x)) {
                part += vec2<f32>(i.x * (rowout[params.part.part_row + r][OUT_LOGP] - i.z), i.x);
            }
        }
        let sums = team_sum(lane, params.teams.size, part);
        if (tr.lead) {
            var ratio = 1.0;
            if (params.has_old != 0u && sums.y > 0.0) {
                // a NaN old log-prob makes its whole sequence's ratio NaN, as in PyTorch
                ratio = exp(clamp_keep_nan(sums.x / sums.y, -20.0, 20.0));
            }
            seqinfo[params.part.part_seq + tr.seq].y = ratio;
        }
    }
}
