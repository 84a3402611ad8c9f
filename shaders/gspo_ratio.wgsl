// One workgroup, between GSPO's two row launches: the sequence-level ratio
// s_b = exp(clamp(Σ_t m·(logp − old_logp) / Σ_t m, −20, 20)), summed in row order by
// the lane that owns sequence b.

struct Params {
    rows: u32,
    rows_per_seq: u32,
    seqs: u32,
    has_old: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rowin: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rowout: array<array<f32, 8>>;
@group(0) @binding(3) var<storage, read_write> seqinfo: array<vec2<f32>>;

@compute @workgroup_size(WG_SIZE)
fn gspo_ratio(@builtin(local_invocation_index) lane: u32) {
    for (var b = lane; b < params.seqs; b += WG_SIZE) {
        let end = min((b + 1u) * params.rows_per_seq, params.rows);
        var num = 0.0;
        var den = 0.0;
        for (var r = b * params.rows_per_seq; r < end; r++) {
            let m = rowin[r].x;
            if (m > 0.0) {
                num += m * (rowout[r][0] - rowin[r].z);
                den += m;
            }
        }
        var ratio = 1.0;
        if (params.has_old != 0u && den > 0.0) {
            ratio = exp(clamp(num / den, -20.0, 20.0));
        }
        seqinfo[b].y = ratio;
    }
}
