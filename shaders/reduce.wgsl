// One workgroup, after the row kernel: the loss and the metrics of docs/MATH.md#metrics
// as masked sums over rows, in a fixed order (lane i takes rows i, i + WG_SIZE, ...,
// then a fixed tree), so the loss is bitwise reproducible; no float atomics (the minima
// and maxima of non-negative values are integer atomics on their bits, which order as
// the values). Also copies the per-row log-probs, entropies and lse to the caller's
// buffers, and finds the first masked-in row whose token id lies outside the
// vocabulary, as the row kernel flagged it (the host turns it into an error naming that
// row), and counts the rows whose other inputs the loss cannot use
// (docs/MATH.md#bad-input: a bad mask on any row, a non-finite advantage or log-prob on
// a masked-in row), with the first of them. Rows are those of every part of the call,
// in order.
//
// The metrics' slots (M_*) and the bad inputs' codes (BAD_*) are declared in
// src/shader/abi/reduce.rs, with the slots Metrics::from_slice reads.
//
// requires: BAD_ADVANTAGES, BAD_MASK, BAD_NONE, BAD_OLD, BAD_REF, BAD_ROLLOUT
// requires: BAD_TARGETS, BAD_TEMPERATURES, HAS_OLD
// requires: HAS_REF, M_COV_SELECTED_FRAC, M_ENTROPY_MASK_FRAC, M_ENTROPY_MEAN
// requires: M_INVALID_INPUT_ROW, M_INVALID_INPUT_ROWS, M_INVALID_INPUT_TENSOR
// requires: M_INVALID_INPUT_VALUE, M_INVALID_TARGET_ID, M_INVALID_TARGET_ROW, M_KL
// requires: M_LOSS, M_MASK_SUM, M_NONFINITE_ROWS, M_PG_CLIPFRAC, M_PG_CLIPFRAC_LOWER
// requires: M_PPO_KL, M_ROLLOUT_IS_CLIPFRAC, M_ROLLOUT_IS_MAX, M_ROLLOUT_IS_MEAN
// requires: M_ROLLOUT_IS_MIN, M_ROLLOUT_LOGP_DIFF_MAX, OUT_BAD_ID, OUT_ENTROPY
// requires: OUT_FLAGS, OUT_KL, OUT_LOGP, OUT_LOSS, OUT_LSE, OUT_TAU, Params, ROWOUT_FLOATS
// requires: ROW_BAD_ID, ROW_BAD_TAU, ROW_CLIPPED, ROW_NOT_KEPT, ROW_DUAL, ROW_NONFINITE, WG_SIZE
// requires: WRITE_ENTROPY, WRITE_LOGP, WRITE_LSE
// requires: M_OFF_POLICY_MASK_FRAC, M_VESPO_PHI_SEQ_MEAN, VESPO_NONE, VESPO_TOKEN
// requires: is_finite, mask_bad, mask_in

// Params, the uniform block: declared in src/shader/abi/reduce.rs

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rowin: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rowout: array<array<f32, ROWOUT_FLOATS>>;
@group(0) @binding(3) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_logp: array<f32>;
@group(0) @binding(5) var<storage, read_write> out_entropy: array<f32>;
@group(0) @binding(6) var<storage, read> rowaux: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> out_lse: array<f32>;

// The masked sums, in this order: loss, clipped, dual-clipped, ppo_kl, kl, entropy,
// non-finite rows, Σ mask, selected, kept, rollout q, rollout q cut, kept by the
// off-policy mask, VESPO's φ (seq_terms.wgsl's share of its mean, on any row).
const SUMS: u32 = 14u;
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
// (error.rs's RowInput), and the value there.
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
        // the sampler's log-prob is read (and in rowaux) only with the correction or
        // the off-policy mask
        if (params.reads_rollout != 0u && !is_finite(rowaux[2u * r].x)) {
            return BadInput(BAD_ROLLOUT, rowaux[2u * r].x);
        }
        // a per-row temperature the row kernel could not take (sampler/on.wgsl)
        let o = rowout[r];
        if ((u32(o[OUT_FLAGS]) & ROW_BAD_TAU) != 0u) {
            return BadInput(BAD_TEMPERATURES, o[OUT_TAU]);
        }
        // a target outside the row's given kept set (sampler/kept.wgsl), by its id
        if ((u32(o[OUT_FLAGS]) & ROW_NOT_KEPT) != 0u) {
            return BadInput(BAD_TARGETS, f32(bitcast<u32>(o[OUT_BAD_ID])));
        }
    }
    return BadInput(BAD_NONE, 0.0);
}

// What one lane gathers over its rows.
struct LaneSums {
    s: array<f32, SUMS>,
    // the first masked-in row with an id outside the vocabulary
    bad: u32,
    invalid: u32,
    first_invalid: u32,
}

// Row r's terms into the lane's sums (the rollout weights' extremes into the
// workgroup's integer atomics).
fn add_row(acc: ptr<function, LaneSums>, r: u32, o: array<f32, ROWOUT_FLOATS>) {
    if (bad_input(r).code != BAD_NONE) {
        (*acc).invalid += 1u;
        (*acc).first_invalid = min((*acc).first_invalid, r);
    }
    let m = rowin[r].x;
    if (params.vespo != VESPO_NONE) {
        (*acc).s[13] += rowaux[2u * r + 1u].w;
    }
    if (mask_bad(m)) {
        // outside every mean, but its NaN reaches the loss
        (*acc).s[0] += o[OUT_LOSS];
    }
    if (!mask_in(m)) {
        return;
    }
    let flags = u32(o[OUT_FLAGS]);
    (*acc).s[0] += o[OUT_LOSS];
    (*acc).s[1] += select(0.0, m, (flags & ROW_CLIPPED) != 0u);
    (*acc).s[2] += select(0.0, m, (flags & ROW_DUAL) != 0u);
    if ((params.inputs & HAS_OLD) != 0u) {
        (*acc).s[3] += m * (rowin[r].z - o[OUT_LOGP]);
    }
    (*acc).s[4] += m * o[OUT_KL];
    (*acc).s[5] += m * o[OUT_ENTROPY];
    (*acc).s[6] += select(0.0, 1.0, (flags & ROW_NONFINITE) != 0u);
    (*acc).s[7] += m;
    if ((*acc).bad == NONE && (flags & ROW_BAD_ID) != 0u) {
        (*acc).bad = r;
    }
    // without the selection pass nothing is selected and every token is kept
    var chosen = vec2<f32>(0.0, 1.0);
    if (params.has_selection != 0u) {
        chosen = rowaux[2u * r + 1u].xy;
    }
    (*acc).s[8] += m * chosen.x;
    (*acc).s[9] += m * chosen.y;
    var kept = 1.0;
    if (params.off_policy != 0u) {
        kept = rowaux[2u * r + 1u].z;
    }
    (*acc).s[12] += m * kept;
    if (params.has_rollout != 0u) {
        let q = rowaux[2u * r];
        (*acc).s[10] += m * q.y;
        (*acc).s[11] += m * q.w;
        atomicMin(&wg_q_min, bitcast<u32>(q.y));
        atomicMax(&wg_q_max, bitcast<u32>(q.y));
        atomicMax(&wg_delta_max, bitcast<u32>(q.z));
    }
}

// The lanes' sums and first bad rows, by a fixed tree into lane 0's.
fn sum_lanes(lane: u32, acc: LaneSums) {
    atomicAdd(&wg_invalid, acc.invalid);
    atomicMin(&wg_first_invalid, acc.first_invalid);
    wg_sums[lane] = acc.s;
    wg_bad[lane] = acc.bad;
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
}

// The metrics from the workgroup's totals (lane 0).
fn write_metrics() {
    let t = wg_sums[0];
    let inv = select(0.0, 1.0 / t[7], t[7] > 0.0);
    let o = params.metrics_offset;
    metrics[o + M_LOSS] = t[0];
    metrics[o + M_PG_CLIPFRAC] = t[1] * inv;
    metrics[o + M_PG_CLIPFRAC_LOWER] = t[2] * inv;
    metrics[o + M_PPO_KL] = t[3] * inv;
    metrics[o + M_KL] = t[4] * inv;
    metrics[o + M_ENTROPY_MEAN] = t[5] * inv;
    metrics[o + M_NONFINITE_ROWS] = t[6];
    metrics[o + M_MASK_SUM] = t[7];
    let first_bad = wg_bad[0];
    metrics[o + M_INVALID_TARGET_ROW] = bitcast<f32>(first_bad);
    var id = 0u;
    if (first_bad != NONE) {
        id = bitcast<u32>(rowout[first_bad][OUT_BAD_ID]);
    }
    metrics[o + M_INVALID_TARGET_ID] = bitcast<f32>(id);
    metrics[o + M_COV_SELECTED_FRAC] = t[8] * inv;
    metrics[o + M_ENTROPY_MASK_FRAC] = t[9] * inv;
    // rollout weights: 0 without the correction or a masked-in token
    let any = params.has_rollout != 0u && t[7] > 0.0;
    metrics[o + M_ROLLOUT_IS_MEAN] = t[10] * inv;
    metrics[o + M_ROLLOUT_IS_MIN] = select(0.0, bitcast<f32>(atomicLoad(&wg_q_min)), any);
    metrics[o + M_ROLLOUT_IS_MAX] = select(0.0, bitcast<f32>(atomicLoad(&wg_q_max)), any);
    metrics[o + M_ROLLOUT_IS_CLIPFRAC] = t[11] * inv;
    metrics[o + M_ROLLOUT_LOGP_DIFF_MAX] = select(0.0, bitcast<f32>(atomicLoad(&wg_delta_max)), any);
    metrics[o + M_OFF_POLICY_MASK_FRAC] = t[12] * inv;
    metrics[o + M_VESPO_PHI_SEQ_MEAN] = select(t[13], t[13] * inv, params.vespo == VESPO_TOKEN);
    let first_invalid = atomicLoad(&wg_first_invalid);
    var what = BadInput(BAD_NONE, 0.0);
    if (first_invalid != NONE) {
        what = bad_input(first_invalid);
    }
    metrics[o + M_INVALID_INPUT_ROWS] = f32(atomicLoad(&wg_invalid));
    metrics[o + M_INVALID_INPUT_ROW] = bitcast<f32>(first_invalid);
    metrics[o + M_INVALID_INPUT_TENSOR] = bitcast<f32>(what.code);
    metrics[o + M_INVALID_INPUT_VALUE] = what.value;
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
    var acc: LaneSums;
    for (var k = 0u; k < SUMS; k++) {
        acc.s[k] = 0.0;
    }
    acc.bad = NONE;
    acc.invalid = 0u;
    acc.first_invalid = NONE;
    for (var r = lane; r < params.rows; r += WG_SIZE) {
        let o = rowout[r];
        if ((params.write_rows & WRITE_LOGP) != 0u) {
            out_logp[params.logp_offset + r] = o[OUT_LOGP];
        }
        if ((params.write_rows & WRITE_ENTROPY) != 0u) {
            out_entropy[params.entropy_offset + r] = o[OUT_ENTROPY];
        }
        if ((params.write_rows & WRITE_LSE) != 0u) {
            out_lse[params.lse_offset + r] = o[OUT_LSE];
        }
        add_row(&acc, r, o);
    }
    sum_lanes(lane, acc);
    if (lane == 0u) {
        write_metrics();
    }
}
