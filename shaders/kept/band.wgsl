// The computed kept set's vocabulary (kept_select.wgsl): order keys of the capped
// logit s, a row's band of undecided keys, the workgroup memory the passes share, and
// lane 0's values made uniform (every decision in kept_select steers barriers).
//
// requires: Group, WG_SIZE, key_value, neg_inf, order_key

// keys gathered at once (8 KiB of workgroup memory), and the trial values of a pass
const CAP: u32 = 2048u;

var<workgroup> wg_list: array<u32, CAP>;

var<workgroup> wg_scan: array<f32, WG_SIZE>;

var<workgroup> wg_n: atomic<u32>;

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
    return (x >= vec4<f32>(b.lo)) & (x <= vec4<f32>(b.hi_incl));
}

fn key_mass(k: u32, sel: RowSel) -> f32 {
    return exp((key_value(k) - sel.s_max) * sel.inv_tau);
}
