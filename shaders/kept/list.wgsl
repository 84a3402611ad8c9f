// Lists in workgroup memory for kept_select.wgsl: a band's keys gathered from the row,
// sorted (by rank where short, else by a bitonic network), and the masses and counts
// read off the sorted list: top-k's k-th key, top-p's edge with ties together.
//
// requires: BandF, CAP, Group, KEY_TOP, RowSel, WG_SIZE, band_floats, cap_group
// requires: group_at, in_band, key_mass, lane_range, load_group, load_tail, params
// requires: s_key, uniform_u32, wg_list, wg_n, wg_pick, wg_scan

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
