// Passes over trial values for kept_select.wgsl: each trial's count and mass of a
// band's logits at or above it, in one read of the row, and the band narrowed to the
// interval between two trials that holds the edge.
//
// requires: Band, BandF, Group, RowSel, WG_SIZE, band_floats, cap_group, group_at
// requires: in_band, key_float, lane_range, load_group, load_tail, params, s_key
// requires: wg_band, wg_list, wg_scan

const TRIALS: u32 = 16u;

// passes that narrow one band: a key range shrinks 16-fold a pass, so 2^32 is one key
// after 8 (and the first top-p pass, by distance from the maximum, may not shrink it)
const MAX_PASSES: u32 = 12u;

var<workgroup> wg_counts: array<atomic<u32>, TRIALS>;

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
