// The sampler's kept set computed from each row (docs/MATH.md#computed-kept-sets):
// min-p, top-k and top-p, in that order, after the softcap and the row's temperature.
// Each rule keeps the tokens at or above some value of the row, so the kept set is
// K = {v : s_v ≥ θ} for one threshold θ on the capped logit s = c·tanh(x/c) (τ > 0
// keeps the order of z = s/τ). This kernel finds θ; the loss launch keeps s ≥ θ in its
// sweeps (sampler/kept.wgsl). No set of ids is ever written.
//
// One workgroup per row, without sorting the row and without an atomic per logit (a
// CPU adapter runs a workgroup's atomics one lane at a time):
//   1. one pass: the row's largest s, and each lane's largest;
//   2. min-p: θ₁ = s_max + τ·ln(min_p);
//   3. top-k: every s at or above the k-th largest lane maximum (a lower bound of the
//      k-th largest s: those k lanes hold k distinct logits at least as large) is
//      gathered into workgroup memory, sorted, and the k-th read off;
//   4. top-p, over what min-p and top-k kept: from the gathered logits where they
//      hold all of it, else in passes that take the mass e^((s − s_max)/τ) above
//      fifteen trial values at once, narrowing the band where the mass from the top
//      crosses p·S until its logits fit workgroup memory; they are then gathered,
//      sorted, and the edge found with tied tokens standing together.
// A band that does not fit (top-k with k beyond a lane a token, or a crowded row) is
// narrowed by the same passes, counting. Where the rules did not count the kept
// tokens (min-p alone), or kept one, a last pass counts them and finds the one's
// column. Counts are exact and every sum is taken in an order fixed by the row alone,
// so θ has the same bits whatever the batch, the chunking or the scheduling. The
// pieces: kept/band.wgsl (keys, bands), kept/list.wgsl (workgroup lists),
// kept/trials.wgsl (passes over trial values).
//
// Per row, its header in the kept scratch (sampler/kept.wgsl reads it), h its first
// item:
//   kept[h]      (h + 3, 1 if a single token is kept, else 0)
//   kept[h + 1]  (τ's bits, 0 for the scalar; 1 if the target is kept)
//   kept[h + 2]  (θ's bits, 0)
//   kept[h + 3]  (column, logit bits) of the one token of a set of one
//
// requires: Band, BandF, CAP, KEPT_HEADER, KEY_TOP, Lanes, MAX_PASSES, Params, RowSel
// requires: TRIALS, WG_SIZE, cap1, cap_group, distance_trials, even_trials, gather
// requires: grid_index, in_band, key_float, key_value, lane_id, lane_range, list_count
// requires: list_edge, list_masses, load_group, load_logit, load_tail, nan4, narrow
// requires: neg_inf, pos_inf, row_start, s_key, sampler_inv_tau, sampler_tau_slot
// requires: trial_pass, uniform_u32, wg_list, wg_n, wg_pick

// Params, the uniform block: declared in src/shader/abi/kept_select.rs

@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> kept_out: array<vec2<u32>>;

// ---- 1. the top of the row -----------------------------------------------------------

// A lane's largest s (KEY_TOP where it met a NaN, tested on the bits: max() may drop
// one), four at a time. The padding of the last group is below the row's largest.
fn lane_max_key(lane: u32, base: u32) -> u32 {
    let full = params.vocab / 8u;
    let rest = params.vocab % 8u;
    var m = vec4<f32>(neg_inf());
    var nan = vec4<bool>(false);
    let r = lane_range(lane, full);
    for (var q = r.begin; q < r.end; q += r.step) {
        let g = cap_group(load_group(base, q));
        m = max(m, max(g.a, g.b));
        nan = nan | nan4(g.a) | nan4(g.b);
    }
    if (rest != 0u && lane == 0u) {
        let g = cap_group(load_tail(base, full, rest));
        m = max(m, max(g.a, g.b));
        nan = nan | nan4(g.a) | nan4(g.b);
    }
    if (any(nan)) {
        return 0xffffffffu;
    }
    return s_key(max(max(m.x, m.y), max(m.z, m.w)));
}

// The row's largest key (0xffffffff where it holds a NaN), every lane's left in
// wg_list[WG_SIZE + lane] for lane_bound.
fn row_max_key(lane: u32, base: u32) -> u32 {
    wg_list[WG_SIZE + lane] = lane_max_key(lane, base);
    workgroupBarrier();
    var most = 0u;
    if (lane == 0u) {
        for (var l = 0u; l < WG_SIZE; l++) {
            most = max(most, wg_list[WG_SIZE + l]);
        }
    }
    return uniform_u32(lane, most);
}

// ---- 2–4. the rules --------------------------------------------------------------------

// The k-th largest key among those ≥ the band's bottom (0 where fewer than k are);
// the length of the gathered list where it holds every such key, sorted (else 0); and
// how many keys are ≥ the k-th (0 where not counted).
fn top_k_key(lane: u32, sel: RowSel, k: u32, gather_first: bool) -> vec3<u32> {
    var s = sel;
    var try_gather = gather_first;
    for (var round = 0u; round < MAX_PASSES; round++) {
        if (try_gather) {
            let n = gather(lane, s);
            if (n <= CAP) {
                let whole = select(0u, n, s.band.hi == KEY_TOP);
                let i = k - s.band.n_above;
                if (n < i) {
                    return vec3<u32>(0u, whole, 0u);
                }
                let key = uniform_u32(lane, wg_list[i - 1u]);
                return vec3<u32>(key, whole, s.band.n_above + list_count(lane, n, key));
            }
        }
        if (s.band.hi - s.band.lo <= 1u) {
            return vec3<u32>(s.band.lo, 0u, 0u);
        }
        let t = trial_pass(lane, s, even_trials(s.band.lo, s.band.hi), false);
        s.band = narrow(lane, t, s.band, false, 0.0, k);
        try_gather = s.band.count <= CAP;
    }
    return vec3<u32>(s.band.lo, 0u, 0u);
}

// Top-p's key over the keys ≥ the band's bottom, from the gathered list where it holds
// all of them (`listed` keys), else by narrowing passes; and how many keys are ≥ it
// (0 where not counted).
fn top_p_key(lane: u32, sel: RowSel, p: f32, listed: u32) -> vec2<u32> {
    if (listed > 0u) {
        let n = list_count(lane, listed, sel.band.lo);
        let total = list_masses(lane, n, sel);
        let key = list_edge(lane, n, sel, p * total);
        return vec2<u32>(key, list_count(lane, n, key));
    }
    var s = sel;
    var t = trial_pass(lane, s, distance_trials(s), true);
    // the band is every key ≥ lo: its mass is S
    let edge_mass = p * t.mass[TRIALS - 1u];
    for (var round = 0u; round < MAX_PASSES; round++) {
        s.band = narrow(lane, t, s.band, true, edge_mass, 0u);
        if (s.band.hi - s.band.lo <= 1u) {
            break;
        }
        if (s.band.count <= CAP) {
            let n = gather(lane, s);
            list_masses(lane, n, s);
            let key = list_edge(lane, n, s, edge_mass);
            return vec2<u32>(key, s.band.n_above + list_count(lane, n, key));
        }
        t = trial_pass(lane, s, even_trials(s.band.lo, s.band.hi), true);
    }
    return vec2<u32>(s.band.lo, 0u);
}

// The k-th largest of the lanes' largest keys (row_max_key left them in wg_list).
fn lane_bound(lane: u32, k: u32) -> u32 {
    // the smallest of the keys with fewer than k keys above them
    if (lane == 0u) {
        atomicStore(&wg_pick, 0xffffffffu);
    }
    workgroupBarrier();
    let mine = wg_list[WG_SIZE + lane];
    var above = 0u;
    for (var l = 0u; l < WG_SIZE; l++) {
        above += select(0u, 1u, wg_list[WG_SIZE + l] > mine);
    }
    if (above < k) {
        atomicMin(&wg_pick, mine);
    }
    workgroupBarrier();
    return uniform_u32(lane, atomicLoad(&wg_pick));
}

// θ's key for the row, the largest of the rules' (0: every token kept), and how many
// keys are ≥ it (0 where not counted).
fn threshold_key(lane: u32, sel0: RowSel) -> vec2<u32> {
    var sel = sel0;
    var theta = 0u;
    var kept = 0u;
    if (params.min_p > 0.0) {
        theta = s_key(sel.s_max + log(params.min_p) / sel.inv_tau);
    }
    var listed = 0u;
    let k = params.top_k;
    if (k > 0u && k < params.vocab) {
        var lo = theta;
        if (k <= WG_SIZE) {
            lo = max(lo, lane_bound(lane, k));
        }
        sel.band.lo = lo;
        let r = top_k_key(lane, sel, k, k <= WG_SIZE || params.vocab <= CAP);
        if (r.x >= theta) {
            theta = r.x;
            kept = r.z;
        }
        listed = r.y;
    }
    if (params.top_p < 1.0) {
        sel.band = Band(theta, KEY_TOP, 0u, 0.0, 0u);
        let r = top_p_key(lane, sel, params.top_p, listed);
        theta = max(theta, r.x);
        kept = r.y;
    }
    return vec2<u32>(theta, kept);
}

// How many of the row's s are ≥ θ, and the first column of one: the census of a set
// whose size the rules did not count, or of a set of one.
fn census(lane: u32, base: u32, theta: f32) -> vec2<u32> {
    if (lane == 0u) {
        atomicStore(&wg_n, 0u);
        atomicStore(&wg_pick, 0xffffffffu);
    }
    workgroupBarrier();
    let full = params.vocab / 8u;
    let rest = params.vocab % 8u;
    let r = lane_range(lane, full);
    var n = 0u;
    var col = 0xffffffffu;
    let band = BandF(theta, pos_inf());
    for (var q = r.begin; q < r.end; q += r.step) {
        let g = cap_group(load_group(base, q));
        let inside = array<vec4<bool>, 2>(in_band(g.a, band), in_band(g.b, band));
        for (var j = 0u; j < 8u; j++) {
            if (inside[j / 4u][j % 4u]) {
                n += 1u;
                col = min(col, 8u * q + j);
            }
        }
    }
    if (rest != 0u && lane == 0u) {
        let g = cap_group(load_tail(base, full, rest));
        let inside = array<vec4<bool>, 2>(in_band(g.a, band), in_band(g.b, band));
        for (var j = 0u; j < rest; j++) {
            if (inside[j / 4u][j % 4u]) {
                n += 1u;
                col = min(col, 8u * full + j);
            }
        }
    }
    atomicAdd(&wg_n, n);
    atomicMin(&wg_pick, col);
    workgroupBarrier();
    return vec2<u32>(uniform_u32(lane, atomicLoad(&wg_n)), atomicLoad(&wg_pick));
}

@compute @workgroup_size(WG_SIZE)
fn kept_select(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lanes: Lanes,
) {
    let row = params.row_base + grid_index(wid, nwg);
    if (row >= params.row_end) {
        return;
    }
    let lane = lane_id(lanes);
    let base = row_start(params.x, row);
    // every decision below steers barriers: values read from storage go through
    // workgroup memory, which compilers can see as uniform
    let inv_tau = bitcast<f32>(uniform_u32(lane, bitcast<u32>(sampler_inv_tau(row, params.inv_tau))));
    let k1 = row_max_key(lane, base);
    // a NaN logit or a bad temperature makes the row NaN whatever it keeps: it keeps
    // every token
    var theta = vec2<u32>(0u, 0u);
    let valid = k1 <= KEY_TOP - 1u && inv_tau > 0.0 && inv_tau < pos_inf();
    if (uniform_u32(lane, select(0u, 1u, valid)) != 0u) {
        let sel = RowSel(base, inv_tau, key_value(k1), Band(0u, KEY_TOP, 0u, 0.0, 0u));
        theta = threshold_key(lane, sel);
    }
    let t = key_float(min(theta.x, KEY_TOP - 1u));
    // a set of one token is listed with its column (its gradient is taken apart)
    var one = vec2<u32>(theta.y, 0xffffffffu);
    if (theta.x > 0u && theta.y <= 1u) {
        one = census(lane, base, t);
    }
    if (lane == 0u) {
        let y = targets[row_start(params.y, row)];
        var y_kept = true;
        if (y < params.vocab) {
            // the loss launch's own test (sampler/kept.wgsl): a NaN stays in
            y_kept = !(cap1(load_logit(base + y)) < t);
        }
        let single = one.x == 1u && one.y < params.vocab;
        let col = select(0u, one.y, single);
        let h = KEPT_HEADER * (params.part_row + row);
        kept_out[h] = vec2<u32>(h + 3u, select(0u, 1u, single));
        kept_out[h + 1u] = vec2<u32>(bitcast<u32>(sampler_tau_slot(row)), select(0u, 1u, y_kept));
        kept_out[h + 2u] = vec2<u32>(bitcast<u32>(t), 0u);
        kept_out[h + 3u] = vec2<u32>(col, bitcast<u32>(load_logit(base + col)));
    }
}
