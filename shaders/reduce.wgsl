// One workgroup, after the row kernel: the loss and SPEC's metrics as masked sums over
// rows, in a fixed order (lane i takes rows i, i + WG_SIZE, ..., then a fixed tree), so
// the loss is bitwise reproducible; no float atomics (the minima and maxima of
// non-negative values are integer atomics on their bits, which order as the values).
// Also copies the per-row log-probs and entropies to the caller's buffers, and finds
// the first masked-in row whose token id lies outside the vocabulary, as the row kernel
// flagged it (the host turns it into an error naming that row), and counts the rows
// whose other inputs the loss cannot use (SPEC "Bad input": a bad mask on any row, a
// non-finite advantage or log-prob on a masked-in row), with the first of them. Rows
// are those of every part of the call, in order.
//
// metrics: loss, pg_clipfrac, pg_clipfrac_lower, ppo_kl, kl, entropy_mean,
//          nonfinite_rows, Σ mask, first bad row (u32 bits, 0xffffffff if none),
//          its id (u32 bits), cov_selected_frac, entropy_mask_frac, rollout_is_mean,
//          rollout_is_min, rollout_is_max, rollout_is_clipfrac, rollout_logp_diff_max,
//          invalid_input_rows, the first such row (u32 bits, 0xffffffff if none), the
//          tensor (u32 bits, a BAD_* code) and its value there

struct Params {
    rows: u32,
    // HAS_OLD, HAS_REF (prelude.wgsl): the optional inputs rowin holds
    inputs: u32,
    metrics_offset: u32,
    logp_offset: u32,
    entropy_offset: u32,
    write_rows: u32,
    // select.wgsl ran: rowaux holds the rollout weights, the selection and the mask
    has_rollout: u32,
    has_selection: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rowin: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rowout: array<array<f32, 8>>;
@group(0) @binding(3) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_logp: array<f32>;
@group(0) @binding(5) var<storage, read_write> out_entropy: array<f32>;
@group(0) @binding(6) var<storage, read> rowaux: array<vec4<f32>>;

const SUMS: u32 = 12u;
var<workgroup> wg_sums: array<array<f32, SUMS>, WG_SIZE>;
var<workgroup> wg_bad: array<u32, WG_SIZE>;
var<workgroup> wg_q_min: atomic<u32>;
var<workgroup> wg_q_max: atomic<u32>;
var<workgroup> wg_delta_max: atomic<u32>;
// rows with a bad input: how many, and the first (integer atomics: exact, any order)
var<workgroup> wg_invalid: atomic<u32>;
var<workgroup> wg_first_invalid: atomic<u32>;

const NONE: u32 = 0xffffffffu;

// The tensor holding a row's first bad input, in the order the host checks them
// (loss.rs's RowInput), and the value there.
const BAD_NONE: u32 = 0u;
const BAD_MASK: u32 = 1u;
const BAD_ADVANTAGES: u32 = 2u;
const BAD_OLD: u32 = 3u;
const BAD_REF: u32 = 4u;
const BAD_ROLLOUT: u32 = 5u;

struct BadInput {
    code: u32,
    value: f32,
}

fn bad_input(r: u32) -> BadInput {
    let i = rowin[r];
    if (mask_bad(i.x)) {
        return BadInput(BAD_MASK, i.x);
    }
    if (mask_in(i.x)) {
        if (!is_finite(i.y)) {
            return BadInput(BAD_ADVANTAGES, i.y);
        }
        if ((params.inputs & HAS_OLD) != 0u && !is_finite(i.z)) {
            return BadInput(BAD_OLD, i.z);
        }
        if ((params.inputs & HAS_REF) != 0u && !is_finite(i.w)) {
            return BadInput(BAD_REF, i.w);
        }
        // the sampler's log-prob is read (and in rowaux) only with the correction
        if (params.has_rollout != 0u && !is_finite(rowaux[2u * r].x)) {
            return BadInput(BAD_ROLLOUT, rowaux[2u * r].x);
        }
    }
    return BadInput(BAD_NONE, 0.0);
}

@compute @workgroup_size(WG_SIZE)
fn reduce(@builtin(local_invocation_index) lane: u32) {
    if (lane == 0u) {
        atomicStore(&wg_q_min, 0x7f800000u);
        atomicStore(&wg_q_max, 0u);
        atomicStore(&wg_delta_max, 0u);
        atomicStore(&wg_invalid, 0u);
        atomicStore(&wg_first_invalid, NONE);
    }
    workgroupBarrier();
    var s: array<f32, SUMS>;
    for (var k = 0u; k < SUMS; k++) {
        s[k] = 0.0;
    }
    var bad = NONE;
    var invalid = 0u;
    var first_invalid = NONE;
    for (var r = lane; r < params.rows; r += WG_SIZE) {
        let o = rowout[r];
        if ((params.write_rows & 1u) != 0u) {
            out_logp[params.logp_offset + r] = o[0];
        }
        if ((params.write_rows & 2u) != 0u) {
            out_entropy[params.entropy_offset + r] = o[1];
        }
        if (bad_input(r).code != BAD_NONE) {
            invalid += 1u;
            first_invalid = min(first_invalid, r);
        }
        let m = rowin[r].x;
        if (mask_bad(m)) {
            // outside every mean, but its NaN reaches the loss
            s[0] += o[3];
        }
        if (mask_in(m)) {
            let flags = u32(o[5]);
            s[0] += o[3];
            s[1] += select(0.0, m, (flags & 1u) != 0u);
            s[2] += select(0.0, m, (flags & 2u) != 0u);
            if ((params.inputs & HAS_OLD) != 0u) {
                s[3] += m * (rowin[r].z - o[0]);
            }
            s[4] += m * o[4];
            s[5] += m * o[1];
            s[6] += select(0.0, 1.0, (flags & 4u) != 0u);
            s[7] += m;
            if (bad == NONE && (flags & 8u) != 0u) {
                bad = r;
            }
            // without the selection pass nothing is selected and every token is kept
            var chosen = vec2<f32>(0.0, 1.0);
            if (params.has_selection != 0u) {
                chosen = rowaux[2u * r + 1u].xy;
            }
            s[8] += m * chosen.x;
            s[9] += m * chosen.y;
            if (params.has_rollout != 0u) {
                let q = rowaux[2u * r];
                s[10] += m * q.y;
                s[11] += m * q.w;
                atomicMin(&wg_q_min, bitcast<u32>(q.y));
                atomicMax(&wg_q_max, bitcast<u32>(q.y));
                atomicMax(&wg_delta_max, bitcast<u32>(q.z));
            }
        }
    }
    atomicAdd(&wg_invalid, invalid);
    atomicMin(&wg_first_invalid, first_invalid);
    wg_sums[lane] = s;
    wg_bad[lane] = bad;
    workgroupBarrier();
    for (var step = WG_SIZE / 2u; step > 0u; step >>= 1u) {
        if (lane < step) {
            for (var k = 0u; k < SUMS; k++) {
                wg_sums[lane][k] += wg_sums[lane + step][k];
            }
            wg_bad[lane] = min(wg_bad[lane], wg_bad[lane + step]);
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        let t = wg_sums[0];
        let inv = select(0.0, 1.0 / t[7], t[7] > 0.0);
        let o = params.metrics_offset;
        metrics[o] = t[0];
        metrics[o + 1u] = t[1] * inv;
        metrics[o + 2u] = t[2] * inv;
        metrics[o + 3u] = t[3] * inv;
        metrics[o + 4u] = t[4] * inv;
        metrics[o + 5u] = t[5] * inv;
        metrics[o + 6u] = t[6];
        metrics[o + 7u] = t[7];
        let first_bad = wg_bad[0];
        metrics[o + 8u] = bitcast<f32>(first_bad);
        var id = 0u;
        if (first_bad != NONE) {
            id = bitcast<u32>(rowout[first_bad][6]);
        }
        metrics[o + 9u] = bitcast<f32>(id);
        metrics[o + 10u] = t[8] * inv;
        metrics[o + 11u] = t[9] * inv;
        // rollout weights: 0 without the correction or a masked-in token
        let any = params.has_rollout != 0u && t[7] > 0.0;
        metrics[o + 12u] = t[10] * inv;
        metrics[o + 13u] = select(0.0, bitcast<f32>(atomicLoad(&wg_q_min)), any);
        metrics[o + 14u] = select(0.0, bitcast<f32>(atomicLoad(&wg_q_max)), any);
        metrics[o + 15u] = t[11] * inv;
        metrics[o + 16u] = select(0.0, bitcast<f32>(atomicLoad(&wg_delta_max)), any);
        let first_invalid = atomicLoad(&wg_first_invalid);
        var what = BadInput(BAD_NONE, 0.0);
        if (first_invalid != NONE) {
            what = bad_input(first_invalid);
        }
        metrics[o + 17u] = f32(atomicLoad(&wg_invalid));
        metrics[o + 18u] = bitcast<f32>(first_invalid);
        metrics[o + 19u] = bitcast<f32>(what.code);
        metrics[o + 20u] = what.value;
    }
}
