// One workgroup, before the row kernel: gathers each row's mask, advantage and old/ref
// log-probs into one vec4 (so the row kernel needs one binding for them), and computes
// the aggregation weight of each sequence, w_r = m_r · c_b (SPEC "Aggregation").
// O(rows) work; sums run in a fixed order, so weights are bitwise reproducible.

struct Params {
    rows: u32,
    rows_per_seq: u32,
    seqs: u32,
    agg_mode: u32,
    flags: u32,
    // token-mean: the caller's global normaliser, or 0 for Σ mask
    global_normalizer: f32,
    // seq-mean-token-sum-norm: L_norm
    l_norm: f32,
    _pad: u32,
    mask_offset: u32,
    adv_offset: u32,
    old_offset: u32,
    ref_offset: u32,
}

// with HAS_OLD and HAS_REF (prelude.wgsl)
const ADV_PER_TOKEN: u32 = 8u;

const AGG_TOKEN_MEAN: u32 = 0u;
const AGG_SEQ_MEAN_TOKEN_MEAN: u32 = 1u;
const AGG_SEQ_MEAN_TOKEN_SUM: u32 = 2u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read> advantages: array<f32>;
@group(0) @binding(3) var<storage, read> old_logp: array<f32>;
@group(0) @binding(4) var<storage, read> ref_logp: array<f32>;
@group(0) @binding(5) var<storage, read_write> rowin: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> seqinfo: array<vec2<f32>>;

var<workgroup> wg_tokens: array<f32, WG_SIZE>;
var<workgroup> wg_nonempty: array<f32, WG_SIZE>;

fn inv_or_zero(d: f32) -> f32 {
    return select(0.0, 1.0 / d, d > 0.0);
}

@compute @workgroup_size(WG_SIZE)
fn prepare(@builtin(local_invocation_index) lane: u32) {
    let per_token = (params.flags & ADV_PER_TOKEN) != 0u;
    for (var r = lane; r < params.rows; r += WG_SIZE) {
        var v = vec4<f32>(mask[params.mask_offset + r], 0.0, 0.0, 0.0);
        v.y = advantages[params.adv_offset + select(r / params.rows_per_seq, r, per_token)];
        if ((params.flags & HAS_OLD) != 0u) {
            v.z = old_logp[params.old_offset + r];
        }
        if ((params.flags & HAS_REF) != 0u) {
            v.w = ref_logp[params.ref_offset + r];
        }
        rowin[r] = v;
    }

    // n_b, summed in row order by the lane that owns sequence b
    var tokens = 0.0;
    var nonempty = 0.0;
    for (var b = lane; b < params.seqs; b += WG_SIZE) {
        let end = min((b + 1u) * params.rows_per_seq, params.rows);
        var n = 0.0;
        for (var r = b * params.rows_per_seq; r < end; r++) {
            // a mask ≤ 0 (or NaN) is a row outside the loss
            n += select(0.0, mask[params.mask_offset + r], mask[params.mask_offset + r] > 0.0);
        }
        seqinfo[b] = vec2<f32>(n, 1.0);
        tokens += n;
        nonempty += select(0.0, 1.0, n > 0.0);
    }
    wg_tokens[lane] = tokens;
    wg_nonempty[lane] = nonempty;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            wg_tokens[lane] += wg_tokens[lane + s];
            wg_nonempty[lane] += wg_nonempty[lane + s];
        }
        workgroupBarrier();
    }
    let total = wg_tokens[0];
    let seqs_nonempty = wg_nonempty[0];

    // each lane rewrites the sequences it summed above, so no barrier is needed
    for (var b = lane; b < params.seqs; b += WG_SIZE) {
        let n = seqinfo[b].x;
        var c: f32;
        if (params.agg_mode == AGG_TOKEN_MEAN) {
            c = inv_or_zero(select(total, params.global_normalizer, params.global_normalizer > 0.0));
        } else if (params.agg_mode == AGG_SEQ_MEAN_TOKEN_MEAN) {
            c = inv_or_zero(n * seqs_nonempty);
        } else if (params.agg_mode == AGG_SEQ_MEAN_TOKEN_SUM) {
            c = inv_or_zero(seqs_nonempty);
        } else {
            c = inv_or_zero(f32(params.seqs) * params.l_norm);
        }
        seqinfo[b] = vec2<f32>(c, 1.0);
    }
}
