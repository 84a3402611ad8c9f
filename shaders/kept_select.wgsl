// The sampler's kept set computed from each row (SPEC "The sampler's distribution"):
// min-p, top-k and top-p, in that order, after the softcap and the row's temperature.
// Each rule keeps the tokens at or above some value of the row, so the kept set is
// K = {v : s_v ≥ θ} for one threshold θ on the capped logit s = c·tanh(x/c) (τ > 0
// keeps the order of z = s/τ). This kernel finds θ; the loss launch keeps s ≥ θ in its
// sweeps (sampler/kept.wgsl). No set of ids is ever written.
//
// One workgroup per row, without sorting the row and without an atomic per logit (a
// CPU adapter runs a workgroup's atomics one lane at a time):
//   1. one pass: the row's largest s, the next largest (ties counted), and each lane's
//      largest;
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
// narrowed by the same passes, counting. Counts are exact and every sum is taken in
// an order fixed by the row alone, so θ has the same bits whatever the batch, the
// chunking or the scheduling.
//
// Per row, its header in the kept scratch (sampler/kept.wgsl reads it), h its first
// item:
//   kept[h]      (h + 3, 1 if a single token is kept, else 0)
//   kept[h + 1]  (τ's bits, 0 for the scalar; 1 if the target is kept)
//   kept[h + 2]  (θ's bits, 0)
//   kept[h + 3]  (column, logit bits) of the row's largest logit: the one token
//
// requires: Group, KEPT_HEADER, Lanes, Params, WG_SIZE, cap1, cap_group, grid_index, key_value
// requires: lane_id, lane_range, load_group, load_logit, load_tail, neg_inf, order_key
// requires: pos_inf, row_start, sampler_inv_tau, sampler_tau_slot

// Params, the uniform block: declared in src/shader/abi/kept_select.rs

@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> kept_out: array<vec2<u32>>;

// keys gathered at once (8 KiB of workgroup memory), and the trial values of a pass
const CAP: u32 = 2048u;
const TRIALS: u32 = 16u;
// passes that narrow one band: a key range shrinks 16-fold a pass, so 2^32 is one key
// after 8 (and the first top-p pass, by distance from the maximum, may not shrink it)
const MAX_PASSES: u32 = 12u;

var<workgroup> wg_list: array<u32, CAP>;
var<workgroup> wg_scan: array<f32, WG_SIZE>;
var<workgroup> wg_n: atomic<u32>;
var<workgroup> wg_counts: array<atomic<u32>, TRIALS>;
var<workgroup> wg_pick: atomic<u32>;

// The order key of s, −0 as +0 (one value: the rules tie them); NaN the largest.
fn s_key(s: f32) -> u32 {
    return order_key(select(s, 0.0, s == 0.0));
}

// The keys still undecided, [lo, hi), `count` of them, and the count and mass of the
// row's keys at or above hi (the mass e^((s − s_max)/τ) a logit).
struct Band {
    lo: u32,
    hi: u32,
    n_above: u32,
    m_above: f32,
    count: u32,
}

// A row and its band.
struct RowSel {
    base: u32,
    inv_tau: f32,
    s_max: f32,
    band: Band,
}

var<workgroup> wg_band: Band;
var<workgroup> wg_one: u32;

// lane 0's value, as a value every lane knows to be uniform
fn uniform_u32(lane: u32, v: u32) -> u32 {
    if (lane == 0u) {
        wg_one = v;
    }
    return workgroupUniformLoad(&wg_one);
}

// ---- 1. the top of the row -----------------------------------------------------------

// The keys' range: below −inf's key no number lies (those keys compare as −inf), and
// NaN's lie above KEY_TOP, the band's open top. The passes compare floats, not keys,
// so a logit's key is computed only where it is gathered.
const KEY_NINF: u32 = 0x007fffffu;
const KEY_TOP: u32 = 0xff800001u;

// The float a key ≤ KEY_TOP − 1 stands for.
fn key_float(k: u32) -> f32 {
    return select(key_value(k), neg_inf(), k <= KEY_NINF);
}

fn nan4(v: vec4<f32>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
}

// Logit j of a group. The passes below take a group's eight logits in straight-line
// code, so that no logit is indexed by a variable; a row's last group has n < 8 of
// the row's (its padding, −inf, would be −c under the softcap).
fn group_at(g: Group, j: u32) -> f32 {
    return select(g.a[j & 3u], g.b[j & 3u], j >= 4u);
}

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

// ---- sorting and gathering in workgroup memory ---------------------------------------

// Barriers are few here: a CPU adapter pays microseconds for each (it switches between
// the SIMD batches of the workgroup's lanes), more than a lane pays for a loop over
// every lane's value. So reductions are one barrier and one lane's loop, and lists
// are sorted by rank.

// wg_list[0 .. n) in descending order: each key's rank (the keys above it, and the
// equal ones before it) is its place, in the upper half of wg_list, then copied back:
// n² / WG_SIZE compares a lane, so only short lists (n ≤ 4·WG_SIZE); longer ones
// take sort_desc's network.
fn sort_by_rank(lane: u32, n: u32) {
    if (n > 4u * WG_SIZE) {
        let p = pow2_at_least(n);
        for (var i = n + lane; i < p; i += WG_SIZE) {
            wg_list[i] = 0u;
        }
        workgroupBarrier();
        sort_desc(lane, 0u, p);
        return;
    }
    for (var i = lane; i < n; i += WG_SIZE) {
        let k = wg_list[i];
        var rank = 0u;
        for (var j = 0u; j < n; j++) {
            let o = wg_list[j];
            rank += select(0u, 1u, o > k || (o == k && j < i));
        }
        wg_list[CAP / 2u + rank] = k;
    }
    workgroupBarrier();
    for (var i = lane; i < n; i += WG_SIZE) {
        wg_list[i] = wg_list[CAP / 2u + i];
    }
    workgroupBarrier();
}

// wg_list[first .. first + n) in descending order (n a power of two), by a bitonic
// network: the same compare-exchanges whatever the keys.
fn sort_desc(lane: u32, first: u32, n: u32) {
    for (var size = 2u; size <= n; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var i = lane; i < n / 2u; i += WG_SIZE) {
                let lo = 2u * i - (i & (stride - 1u));
                let hi = lo + stride;
                let a = wg_list[first + lo];
                let b = wg_list[first + hi];
                // descending within blocks of `size` whose index bit is clear
                let desc = (lo & size) == 0u;
                if ((a < b) == desc) {
                    wg_list[first + lo] = b;
                    wg_list[first + hi] = a;
                }
            }
            workgroupBarrier();
        }
    }
}

fn pow2_at_least(n: u32) -> u32 {
    var p = 1u;
    while (p < n) {
        p <<= 1u;
    }
    return p;
}

// Keys of the band [lo, hi) into wg_list, sorted, descending; the count (more than
// CAP: only the first CAP are there, unsorted).
fn gather(lane: u32, sel: RowSel) -> u32 {
    if (lane == 0u) {
        atomicStore(&wg_n, 0u);
    }
    workgroupBarrier();
    let full = params.vocab / 8u;
    let rest = params.vocab % 8u;
    let r = lane_range(lane, full);
    let band = band_floats(sel.band);
    for (var q = r.begin; q < r.end; q += r.step) {
        gather_group(cap_group(load_group(sel.base, q)), 8u, band);
    }
    if (rest != 0u && lane == 0u) {
        gather_group(cap_group(load_tail(sel.base, full, rest)), rest, band);
    }
    let n = workgroupUniformLoad(&wg_n);
    if (n <= CAP) {
        sort_by_rank(lane, n);
    }
    return n;
}

// A band as floats: the keys [lo, hi) are the numbers [lo, hi_incl] (hi_incl the float
// of key hi − 1: +inf where hi is the open top; the key below +0's is −0's, which
// compares equal to +0, so the one below it stands in).
struct BandF {
    lo: f32,
    hi_incl: f32,
}

fn band_floats(b: Band) -> BandF {
    var top = min(b.hi, KEY_TOP) - 1u;
    if (top == 0x7fffffffu) {
        top -= 1u;
    }
    return BandF(key_float(b.lo), key_float(top));
}

fn in_band(x: vec4<f32>, b: BandF) -> vec4<bool> {
    return x >= vec4<f32>(b.lo) & x <= vec4<f32>(b.hi_incl);
}

fn gather_group(g: Group, n: u32, band: BandF) {
    let inside = array<vec4<bool>, 2>(in_band(g.a, band), in_band(g.b, band));
    if (!any(inside[0] | inside[1])) {
        return;
    }
    for (var j = 0u; j < 8u; j++) {
        if (j < n && inside[j / 4u][j % 4u]) {
            let i = atomicAdd(&wg_n, 1u);
            if (i < CAP) {
                wg_list[i] = s_key(group_at(g, j));
            }
        }
    }
}

// ---- passes over trial values --------------------------------------------------------

// What a pass found: for trial j < TRIALS − 1, the count and mass of the band's keys
// at or above trial[j]; at TRIALS − 1, the whole band's.
struct Trials {
    key: array<u32, TRIALS>,
    count: array<u32, TRIALS>,
    mass: array<f32, TRIALS>,
}

// Trial keys spread evenly over the band, descending, the last the band's bottom.
fn even_trials(lo: u32, hi: u32) -> array<u32, TRIALS> {
    var t: array<u32, TRIALS>;
    let width = hi - lo;
    for (var j = 0u; j < TRIALS; j++) {
        let steps = TRIALS - 1u - j;
        // width/16·steps without overflow, and every key of a narrow band
        t[j] = lo + select((width / TRIALS) * steps, min(steps, width - 1u), width <= TRIALS);
    }
    return t;
}

// The first top-p pass: trials at distances from the row's largest z (mass e^-d).
fn distance_trials(sel: RowSel) -> array<u32, TRIALS> {
    let d = array<f32, 15>(0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 18.0);
    var t: array<u32, TRIALS>;
    for (var j = 0u; j < TRIALS - 1u; j++) {
        t[j] = clamp(s_key(sel.s_max - d[j] / sel.inv_tau), sel.band.lo, sel.band.hi - 1u);
    }
    t[TRIALS - 1u] = sel.band.lo;
    return t;
}

// A lane's sums in a trial pass, four trials a vector.
struct TrialAcc {
    at: array<vec4<f32>, 4>,
    count: array<vec4<u32>, 4>,
    mass: array<vec4<f32>, 4>,
}

// One pass over the row: each trial's count (and, with `mass`, the mass) of the
// band's logits at or above it. Lanes sum their own logits in order, then the lanes
// are summed by a fixed tree: the bits depend on the row alone.
fn trial_pass(lane: u32, sel: RowSel, key: array<u32, TRIALS>, mass: bool) -> Trials {
    var acc: TrialAcc;
    for (var q = 0u; q < 4u; q++) {
        let k = 4u * q;
        acc.at[q] = vec4<f32>(key_float(key[k]), key_float(key[k + 1u]), key_float(key[k + 2u]), key_float(key[k + 3u]));
        acc.count[q] = vec4<u32>(0u);
        acc.mass[q] = vec4<f32>(0.0);
    }
    if (lane < TRIALS) {
        atomicStore(&wg_counts[lane], 0u);
    }
    let full = params.vocab / 8u;
    let rest = params.vocab % 8u;
    let r = lane_range(lane, full);
    let band = band_floats(sel.band);
    for (var q = r.begin; q < r.end; q += r.step) {
        acc = trial_group(acc, cap_group(load_group(sel.base, q)), 8u, sel, band, mass);
    }
    if (rest != 0u && lane == 0u) {
        acc = trial_group(acc, cap_group(load_tail(sel.base, full, rest)), rest, sel, band, mass);
    }
    var out = Trials(key, array<u32, TRIALS>(), array<f32, TRIALS>());
    for (var j = 0u; j < TRIALS; j++) {
        out.count[j] = acc.count[j / 4u][j % 4u];
        out.mass[j] = acc.mass[j / 4u][j % 4u];
    }
    workgroupBarrier();
    for (var j = 0u; j < TRIALS; j++) {
        atomicAdd(&wg_counts[j], out.count[j]);
    }
    if (mass) {
        out.mass = sum_lanes(lane, out.mass);
    }
    workgroupBarrier();
    for (var j = 0u; j < TRIALS; j++) {
        out.count[j] = atomicLoad(&wg_counts[j]);
    }
    workgroupBarrier();
    return out;
}

fn trial_group(a0: TrialAcc, g: Group, n: u32, sel: RowSel, band: BandF, mass: bool) -> TrialAcc {
    var a = a0;
    let inside = array<vec4<bool>, 2>(in_band(g.a, band), in_band(g.b, band));
    if (!any(inside[0] | inside[1])) {
        return a;
    }
    for (var j = 0u; j < 8u; j++) {
        let x = group_at(g, j);
        if (j < n && inside[j / 4u][j % 4u]) {
            var e = 0.0;
            if (mass) {
                e = exp((x - sel.s_max) * sel.inv_tau);
            }
            let xv = vec4<f32>(x);
            for (var q = 0u; q < 4u; q++) {
                let on = xv >= a.at[q];
                a.count[q] += select(vec4<u32>(0u), vec4<u32>(1u), on);
                a.mass[q] += select(vec4<f32>(0.0), vec4<f32>(e), on);
            }
        }
    }
    return a;
}

// Every lane's TRIALS sums added over the lanes in lane order, one lane a trial, eight
// trials at a time through wg_list (WG_SIZE·8 ≤ CAP words).
fn sum_lanes(lane: u32, mine: array<f32, TRIALS>) -> array<f32, TRIALS> {
    var out: array<f32, TRIALS>;
    for (var h = 0u; h < TRIALS; h += 8u) {
        for (var j = 0u; j < 8u; j++) {
            wg_list[8u * lane + j] = bitcast<u32>(mine[h + j]);
        }
        workgroupBarrier();
        if (lane < 8u) {
            var sum = 0.0;
            for (var l = 0u; l < WG_SIZE; l++) {
                sum += bitcast<f32>(wg_list[8u * l + lane]);
            }
            wg_scan[lane] = sum;
        }
        workgroupBarrier();
        for (var j = 0u; j < 8u; j++) {
            out[h + j] = wg_scan[j];
        }
        workgroupBarrier();
    }
    return out;
}

// The band narrowed to the trials' interval that holds the edge: the first trial whose
// mass from the top reaches `mass` (top-p), or whose count reaches `want` (top-k).
fn narrow(lane: u32, t: Trials, b: Band, by_mass: bool, mass: f32, want: u32) -> Band {
    var j = TRIALS - 1u;
    for (var i = TRIALS; i > 0u; i--) {
        let reach = select(b.n_above + t.count[i - 1u] >= want, b.m_above + t.mass[i - 1u] >= mass, by_mass);
        j = select(j, i - 1u, reach);
    }
    var nb = b;
    nb.lo = t.key[j];
    nb.count = t.count[j];
    if (j > 0u) {
        nb.hi = t.key[j - 1u];
        nb.n_above = b.n_above + t.count[j - 1u];
        nb.m_above = b.m_above + t.mass[j - 1u];
        nb.count = t.count[j] - t.count[j - 1u];
    }
    if (lane == 0u) {
        wg_band = nb;
    }
    return workgroupUniformLoad(&wg_band);
}

fn key_mass(k: u32, sel: RowSel) -> f32 {
    return exp((key_value(k) - sel.s_max) * sel.inv_tau);
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

// The masses of the sorted list's first n keys: each lane sums a run of them in order,
// then each lane the runs up to its own (wg_scan[l]). Returns the total.
fn list_masses(lane: u32, n: u32, sel: RowSel) -> f32 {
    let per = (n + WG_SIZE - 1u) / WG_SIZE;
    let b = min(lane * per, n);
    let e = min(b + per, n);
    var sum = 0.0;
    for (var i = b; i < e; i++) {
        sum += key_mass(wg_list[i], sel);
    }
    wg_scan[lane] = sum;
    workgroupBarrier();
    // each lane its inclusive prefix, summed in lane order
    var prefix = 0.0;
    for (var l = 0u; l <= lane; l++) {
        prefix += wg_scan[l];
    }
    workgroupBarrier();
    wg_scan[lane] = prefix;
    workgroupBarrier();
    return wg_scan[WG_SIZE - 1u];
}

// Top-p's edge in the sorted list (list_masses ran): the smallest key whose tokens
// have less than `edge_mass` of mass strictly above them (m_above, from keys above the
// list, and the list's larger keys). Tied keys share the mass above their first.
fn list_edge(lane: u32, n: u32, sel: RowSel, edge_mass: f32) -> u32 {
    if (lane == 0u) {
        atomicStore(&wg_pick, KEY_TOP);
    }
    let per = (n + WG_SIZE - 1u) / WG_SIZE;
    let b = min(lane * per, n);
    let e = min(b + per, n);
    var above = sel.band.m_above;
    if (lane > 0u) {
        above += wg_scan[lane - 1u];
    }
    workgroupBarrier();
    for (var i = b; i < e; i++) {
        let k = wg_list[i];
        let first = i == 0u || wg_list[i - 1u] != k;
        if (first && above < edge_mass) {
            atomicMin(&wg_pick, k);
        }
        above += key_mass(k, sel);
    }
    workgroupBarrier();
    return uniform_u32(lane, atomicLoad(&wg_pick));
}

// How many of the sorted list's first n keys are ≥ lo.
fn list_count(lane: u32, n: u32, lo: u32) -> u32 {
    if (lane == 0u) {
        atomicStore(&wg_n, 0u);
    }
    workgroupBarrier();
    for (var i = lane; i < n; i += WG_SIZE) {
        if (wg_list[i] >= lo) {
            atomicMax(&wg_n, i + 1u);
        }
    }
    return workgroupUniformLoad(&wg_n);
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
