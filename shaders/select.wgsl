// One workgroup, between the statistics of every row and the loss: the batch-wide
// choices of docs/MATH.md over the masked-in tokens, in phases.
//
//   ROLLOUT         (per part)  the rollout correction's weight q of each row
//   SELECT          (all rows)  the top-entropy mask e and the covariance selection of
//                               clip_cov / kl_cov
//   RENORM_GATHER   (per part)  each sequence's Σ m·e, for the renormalised weights
//   RENORM_WEIGHTS  (all seqs)  those weights c'_b (aggregate.wgsl)
//
// One part runs every phase it needs in one launch; several run the per-part phases
// part by part (sequences have one length within a part, so teams of lanes sum them,
// workgroup/sum.wgsl). Selections are radix selects over order-preserving u32 keys, 8
// bits a pass with one histogram bin a lane, ties broken by a second select on the row
// index: exact integer counts, so the choice is the same whatever the scheduling, the
// chunking or the parts.
//
// rowaux holds two vec4 a row: (rollout log-prob, q, |δ|, q cut) and (selected, kept).
//
// requires: COV_CLIP, COV_NONE, ENTROPY_QUANTILE, ENTROPY_TOP_K, LEVEL_SEQUENCE
// requires: LEVEL_TOKEN, MODE_TRUNCATE, OUT_ENTROPY, OUT_LOGP, Params, RENORM_GATHER
// requires: RENORM_WEIGHTS, ROLLOUT, ROWOUT_FLOATS, SELECT, WG_SIZE, clamp_keep_nan
// requires: is_finite, is_nan, key_value, mask_in, order_key, team_rows, team_sum
// requires: write_weights

// Params, the uniform block: declared in src/shader/abi/select.rs
// and its phases (ROLLOUT, SELECT, RENORM_*) and codes (COV_*, ENTROPY_*, LEVEL_*,
// MODE_*)

@group(0) @binding(0) var<uniform> params: Params;
// per row: mask, advantage, old log-prob, ref log-prob (prepare.wgsl)
@group(0) @binding(1) var<storage, read> rowin: array<vec4<f32>>;
// per row: logp, entropy, lse, ... (the row kernel's statistics)
@group(0) @binding(2) var<storage, read> rowout: array<array<f32, ROWOUT_FLOATS>>;
@group(0) @binding(3) var<storage, read_write> rowaux: array<vec4<f32>>;
// per sequence: c_b, s_b, c'_b, and one slot of scratch
@group(0) @binding(4) var<storage, read_write> seqinfo: array<vec4<f32>>;

// radix select: one bin a lane (WG_SIZE is 256 for the one-workgroup kernels)
const BINS: u32 = 256u;
var<workgroup> wg_hist: array<atomic<u32>, BINS>;
var<workgroup> wg_scan: array<u32, BINS>;
var<workgroup> wg_pick: vec2<u32>;
var<workgroup> wg_count: atomic<u32>;
var<workgroup> wg_min: atomic<u32>;

// the means of the advantage and the log-prob over the masked-in tokens (cov keys)
var<private> mean_a: f32;
var<private> mean_logp: f32;

@compute @workgroup_size(WG_SIZE)
fn select_tokens(@builtin(local_invocation_index) lane: u32) {
    if ((params.phases & ROLLOUT) != 0u) {
        rollout_weights(lane);
        storageBarrier();
    }
    if ((params.phases & SELECT) != 0u) {
        select_rows(lane);
        storageBarrier();
    }
    if ((params.phases & RENORM_GATHER) != 0u) {
        renorm_gather(lane);
        storageBarrier();
    }
    if ((params.phases & RENORM_WEIGHTS) != 0u) {
        renorm_weights(lane);
    }
}

fn masked_in(i: u32) -> bool {
    return mask_in(rowin[i].x);
}

// ---- rollout correction (docs/MATH.md#rollout-correction) ---------------------------

// δ of row i: old (or current) log-prob minus the sampler's; 0 where masked out, so a
// junk sampler log-prob there reaches nothing.
fn rollout_delta(i: u32) -> f32 {
    if (!masked_in(i)) {
        return 0.0;
    }
    let own = select(rowout[i][OUT_LOGP], rowin[i].z, params.has_old != 0u);
    return own - rowaux[2u * i].x;
}

fn rollout_weights(lane: u32) {
    // sequence and geometric levels: log ρ_b of each sequence, in seqinfo's scratch slot
    if (params.level != LEVEL_TOKEN) {
        for (var k = 0u; k < params.teams.rounds; k++) {
            let tr = team_rows(params.teams, lane, k, params.part.seqs, params.part.rows_per_seq, params.part.rows);
            var part = vec2<f32>(0.0, 0.0);
            for (var r = tr.begin; r < tr.end; r += tr.step) {
                let i = params.part.part_row + r;
                if (masked_in(i)) {
                    let m = rowin[i].x;
                    part += vec2<f32>(m * rollout_delta(i), m);
                }
            }
            let sums = team_sum(lane, params.teams.size, part);
            if (tr.lead) {
                var log_rho = sums.x;
                if (params.level != LEVEL_SEQUENCE) {
                    log_rho = select(0.0, sums.x / sums.y, sums.y > 0.0);
                }
                seqinfo[params.part.part_seq + tr.seq].w = log_rho;
            }
        }
        storageBarrier();
    }
    for (var r = lane; r < params.part.rows; r += WG_SIZE) {
        let i = params.part.part_row + r;
        let delta = rollout_delta(i);
        var log_rho = delta;
        if (params.level != LEVEL_TOKEN) {
            log_rho = seqinfo[params.part.part_seq + r / params.part.rows_per_seq].w;
        }
        // a NaN δ (a NaN log-prob) keeps q NaN in either mode: the row kernel poisons
        // the rows it weights (docs/MATH.md#bad-input)
        let rho = exp(clamp_keep_nan(log_rho, -20.0, 20.0));
        let cut = !is_nan(rho) && (rho < params.c_lo || rho > params.c_hi);
        var q = select(rho, 0.0, cut);
        if (params.rollout_mode == MODE_TRUNCATE) {
            q = clamp_keep_nan(rho, params.c_lo, params.c_hi);
        }
        if (!masked_in(i)) {
            q = 1.0;
        }
        let v = rowaux[2u * i];
        rowaux[2u * i] = vec4<f32>(v.x, q, abs(delta), select(0.0, 1.0, cut && masked_in(i)));
    }
}

// ---- order-preserving keys and the radix select ------------------------------------

const KEY_ENTROPY_ASC: u32 = 0u;
const KEY_ENTROPY_DESC: u32 = 1u;
const KEY_COV_DESC: u32 = 2u;
const KEY_PRIORITY: u32 = 3u;

// −0 and +0 are one value: a product with an exact-zero deviation ties with every other
// zero (docs/MATH.md#covariance-token-selection: ties to the lower row), whatever the
// other factor's sign. Tested on the bits, as is_nan: a driver's float compare must not
// turn a NaN into 0.
fn cov_of(i: u32) -> f32 {
    let c = (rowin[i].y - mean_a) * (rowout[i][OUT_LOGP] - mean_logp);
    return select(c, 0.0, (bitcast<u32>(c) & 0x7fffffffu) == 0u);
}

// clip_cov's priority: lowbias32(r + seed·0x9E3779B9), wrapping.
fn priority(r: u32) -> u32 {
    var x = r + params.seed * 0x9E3779B9u;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// Whether PPO clipped row i (l2 > l1): clip_cov's candidates are the unclipped tokens.
fn ppo_clipped(i: u32) -> bool {
    var r = 1.0;
    if (params.has_old != 0u) {
        r = exp(clamp_keep_nan(rowout[i][OUT_LOGP] - rowin[i].z, -20.0, 20.0));
    }
    let a = rowin[i].y;
    let l1 = -a * r;
    let l2 = -a * clamp_keep_nan(r, 1.0 - params.clip_low, 1.0 + params.clip_high);
    // a NaN compares false, as in the reference: on the bits, not by a driver's compare
    return !is_nan(l1) && !is_nan(l2) && l2 > l1;
}

// Rows that take part in a selection, and their keys: smaller keys are chosen first.
fn candidate(i: u32, which: u32) -> bool {
    if (!masked_in(i)) {
        return false;
    }
    if (which == KEY_PRIORITY) {
        let c = cov_of(i);
        // a NaN covariance (a non-finite advantage) is no candidate
        return !ppo_clipped(i) && !is_nan(c) && params.cov_lb < c && c < params.cov_ub;
    }
    return true;
}

fn key_of(i: u32, which: u32) -> u32 {
    if (which == KEY_ENTROPY_ASC) {
        return order_key(rowout[i][OUT_ENTROPY]);
    }
    if (which == KEY_ENTROPY_DESC) {
        return ~order_key(rowout[i][OUT_ENTROPY]);
    }
    if (which == KEY_COV_DESC) {
        let c = cov_of(i);
        return select(~order_key(c), 0xffffffffu, is_nan(c));
    }
    return priority(i);
}

// Candidates counted over every row.
fn count_candidates(lane: u32, which: u32) -> u32 {
    if (lane == 0u) {
        atomicStore(&wg_count, 0u);
    }
    workgroupBarrier();
    var n = 0u;
    for (var i = lane; i < params.all_rows; i += WG_SIZE) {
        n += select(0u, 1u, candidate(i, which));
    }
    atomicAdd(&wg_count, n);
    return workgroupUniformLoad(&wg_count);
}

// One 8-bit digit of the select: among candidates whose value agrees with `prefix`
// above bit `shift + 8` (and, on the row passes, whose key is `key_t`), the digit whose
// bin holds the `want`-th smallest value, and the count of smaller digits.
fn digit_pass(lane: u32, which: u32, rows_stage: bool, key_t: u32, prefix: u32, shift: u32, want: u32) -> vec2<u32> {
    atomicStore(&wg_hist[lane], 0u);
    workgroupBarrier();
    let high = select(0xffffffffu << ((shift + 8u) & 31u), 0u, shift >= 24u);
    for (var i = lane; i < params.all_rows; i += WG_SIZE) {
        if (candidate(i, which)) {
            let key = key_of(i, which);
            var value = key;
            var inside = true;
            if (rows_stage) {
                value = i;
                inside = key == key_t;
            }
            if (inside && (value & high) == (prefix & high)) {
                atomicAdd(&wg_hist[(value >> shift) & 0xffu], 1u);
            }
        }
    }
    workgroupBarrier();
    let c = atomicLoad(&wg_hist[lane]);
    // inclusive prefix sums over the bins, one a lane (Hillis–Steele)
    wg_scan[lane] = c;
    workgroupBarrier();
    for (var s = 1u; s < BINS; s <<= 1u) {
        var add = 0u;
        if (lane >= s) {
            add = wg_scan[lane - s];
        }
        workgroupBarrier();
        wg_scan[lane] += add;
        workgroupBarrier();
    }
    let incl = wg_scan[lane];
    if (incl - c < want && want <= incl) {
        wg_pick = vec2<u32>(lane, incl - c);
    }
    return workgroupUniformLoad(&wg_pick);
}

// The k smallest keys among the candidates (1 ≤ k ≤ their count), ties to the lower
// row: the row i is chosen when key < t.x, or key == t.x and i ≤ t.y. With
// `rows_too` false only t.x is found (the k-th smallest key).
fn radix_select(lane: u32, which: u32, k: u32, rows_too: bool) -> vec2<u32> {
    var key_t = 0u;
    var want = k;
    for (var p = 0u; p < 4u; p++) {
        let shift = 24u - 8u * p;
        let pick = digit_pass(lane, which, false, 0u, key_t, shift, want);
        key_t |= pick.x << shift;
        want -= pick.y;
    }
    var row_t = 0xffffffffu;
    if (rows_too) {
        row_t = 0u;
        for (var p = 0u; p < 4u; p++) {
            let shift = 24u - 8u * p;
            let pick = digit_pass(lane, which, true, key_t, row_t, shift, want);
            row_t |= pick.x << shift;
            want -= pick.y;
        }
    }
    return vec2<u32>(key_t, row_t);
}

// The k rows to choose (k ≥ 1): all candidates when there are no more than k.
fn choose(lane: u32, which: u32, k: u32) -> vec2<u32> {
    let n = count_candidates(lane, which);
    if (n <= k) {
        return vec2<u32>(0xffffffffu, 0xffffffffu);
    }
    return radix_select(lane, which, k, true);
}

fn chosen(i: u32, which: u32, t: vec2<u32>) -> bool {
    if (!candidate(i, which)) {
        return false;
    }
    let key = key_of(i, which);
    return key < t.x || (key == t.x && i <= t.y);
}

// ---- the top-entropy mask and the covariance selection ------------------------------

// The smallest entropy key above `key_t`, or key_t itself when none is.
fn next_key_above(lane: u32, key_t: u32) -> u32 {
    if (lane == 0u) {
        atomicStore(&wg_min, 0xffffffffu);
    }
    workgroupBarrier();
    for (var i = lane; i < params.all_rows; i += WG_SIZE) {
        if (masked_in(i)) {
            let key = key_of(i, KEY_ENTROPY_ASC);
            if (key > key_t) {
                atomicMin(&wg_min, key);
            }
        }
    }
    let m = workgroupUniformLoad(&wg_min);
    return select(m, key_t, m == 0xffffffffu && key_t == 0xffffffffu);
}

// The lowest masked-in row, or 0xffffffff when none is.
fn first_masked_in(lane: u32) -> u32 {
    if (lane == 0u) {
        atomicStore(&wg_min, 0xffffffffu);
    }
    workgroupBarrier();
    for (var i = lane; i < params.all_rows; i += WG_SIZE) {
        if (masked_in(i)) {
            atomicMin(&wg_min, i);
            break;
        }
    }
    return workgroupUniformLoad(&wg_min);
}

// Keys of masked-in entropies no larger than `key_t`.
fn count_up_to(lane: u32, key_t: u32) -> u32 {
    if (lane == 0u) {
        atomicStore(&wg_count, 0u);
    }
    workgroupBarrier();
    var n = 0u;
    for (var i = lane; i < params.all_rows; i += WG_SIZE) {
        n += select(0u, 1u, masked_in(i) && key_of(i, KEY_ENTROPY_ASC) <= key_t);
    }
    atomicAdd(&wg_count, n);
    return workgroupUniformLoad(&wg_count);
}

fn select_rows(lane: u32) {
    let n = count_candidates(lane, KEY_ENTROPY_ASC);
    // the top-entropy mask: a threshold θ (the quantile) or the top ⌈ρ·N⌉ rows
    var theta = -3.40282346638528859812e+38;
    var top = vec2<u32>(0xffffffffu, 0xffffffffu);
    if (params.entropy == ENTROPY_QUANTILE && n > 0u) {
        // torch.quantile's linear interpolation between order statistics lo and lo + 1
        let pos = (1.0 - params.rho) * f32(n - 1u);
        let lo = min(u32(floor(pos)), n - 1u);
        let frac = pos - f32(lo);
        let key_lo = radix_select(lane, KEY_ENTROPY_ASC, lo + 1u, false).x;
        var key_hi = key_lo;
        if (lo + 1u < n && count_up_to(lane, key_lo) < lo + 2u) {
            key_hi = next_key_above(lane, key_lo);
        }
        let v_lo = key_value(key_lo);
        theta = v_lo + frac * (key_value(key_hi) - v_lo);
    }
    if (params.entropy == ENTROPY_TOP_K) {
        // k ≥ 1 whenever a token is masked in (ρ > 0)
        let k = min(u32(ceil(f32(n) * params.rho)), n);
        if (k > 0u) {
            top = choose(lane, KEY_ENTROPY_DESC, k);
        }
    }
    // the covariance selection
    var sel = vec2<u32>(0u, 0u);
    var which = KEY_COV_DESC;
    if (params.cov != COV_NONE) {
        // The means about the first masked-in token's values: where every token has
        // the same advantage (one sequence, one group) or the same log-prob, Σ/N in f32
        // is not that value, and the deviations would be rounding noise whose sign
        // picks the tokens; about a pivot they are exactly 0, every covariance ties, as
        // in exact arithmetic. A non-finite pivot is not used (the sums are then as
        // they were: NaN or ±inf).
        let first = first_masked_in(lane);
        var pivot = vec2<f32>(0.0, 0.0);
        if (first < params.all_rows) {
            pivot = vec2<f32>(rowin[first].y, rowout[first][OUT_LOGP]);
            pivot = select(vec2<f32>(0.0, 0.0), pivot, vec2<bool>(is_finite(pivot.x), is_finite(pivot.y)));
        }
        var sums = vec2<f32>(0.0, 0.0);
        for (var i = lane; i < params.all_rows; i += WG_SIZE) {
            if (masked_in(i)) {
                sums += vec2<f32>(rowin[i].y, rowout[i][OUT_LOGP]) - pivot;
            }
        }
        let total = team_sum(lane, WG_SIZE, sums);
        mean_a = pivot.x + total.x / f32(max(n, 1u));
        mean_logp = pivot.y + total.y / f32(max(n, 1u));
        let ratio = params.cov_ratio;
        let k = max(1u, u32(floor(f32(n) * ratio)));
        if (params.cov == COV_CLIP) {
            which = KEY_PRIORITY;
        }
        sel = choose(lane, which, k);
    }
    for (var i = lane; i < params.all_rows; i += WG_SIZE) {
        var kept = masked_in(i);
        if (params.entropy == ENTROPY_QUANTILE) {
            kept = kept && rowout[i][OUT_ENTROPY] >= theta;
        } else if (params.entropy == ENTROPY_TOP_K) {
            kept = chosen(i, KEY_ENTROPY_DESC, top);
        }
        var selected = false;
        if (params.cov != COV_NONE) {
            selected = chosen(i, which, sel);
        }
        rowaux[2u * i + 1u] = vec4<f32>(select(0.0, 1.0, selected), select(0.0, 1.0, kept), 0.0, 0.0);
    }
}

// ---- the renormalised weights of the top-entropy mask -------------------------------

// Σ m·e of each of this part's sequences, into seqinfo's scratch slot.
fn renorm_gather(lane: u32) {
    for (var k = 0u; k < params.teams.rounds; k++) {
        let tr = team_rows(params.teams, lane, k, params.part.seqs, params.part.rows_per_seq, params.part.rows);
        var part = 0.0;
        for (var r = tr.begin; r < tr.end; r += tr.step) {
            let i = params.part.part_row + r;
            if (masked_in(i) && rowaux[2u * i + 1u].y > 0.0) {
                part += rowin[i].x;
            }
        }
        let n = team_sum(lane, params.teams.size, vec2<f32>(part, 0.0)).x;
        if (tr.lead) {
            seqinfo[params.part.part_seq + tr.seq].w = n;
        }
    }
}

// c'_b of every sequence from its Σ m·e (slot 3), as prepare.wgsl's weights from Σ m.
fn renorm_weights(lane: u32) {
    write_weights(lane, params.agg_mode, params.all_seqs, params.global_normalizer, params.l_norm, params.count_empty != 0u, 3u, 2u);
}
