// Shared by every row kernel: the online log-sum-exp accumulator.
//
// A partial row is (m, s, t) with m the largest z seen, s = Σ exp(z - m) and
// t = Σ exp(z - m)·(z - m). Then lse = m + log s and the entropy is
// H = lse - Σ p z = log s - t/s. Keeping t relative to m avoids the cancellation
// of computing lse - Σ p z when |z| is large (±1e4 logits).
//
// m starts at the most negative finite f32, not -inf: exp(-inf - -inf) would be NaN
// for a row that opens with -inf entries. Every combine is built from max, + and *,
// which are commutative bit for bit, so a reduction tree gives the same bits whatever
// order its pairs come in (shared memory or subgroup shuffles).
//
// requires: LayoutParams

override WG_SIZE: u32 = 256u;

// How a row's n items (elements, quads or words) are dealt to the lanes. GPUs want
// lane i to take items i, i + WG_SIZE, ... (neighbouring lanes read neighbouring
// addresses in one transaction); a CPU rasteriser such as lavapipe runs a SIMD group
// of lanes through its whole loop before the next, and wants each lane to stream one
// contiguous block. Either way a lane's items and their order depend only on n.
override LANE_BLOCKS: bool = false;

struct LaneRange {
    begin: u32,
    end: u32,
    step: u32,
}

fn lane_range(lane: u32, n: u32) -> LaneRange {
    if (LANE_BLOCKS) {
        let per = (n + WG_SIZE - 1u) / WG_SIZE;
        let begin = min(lane * per, n);
        return LaneRange(begin, min(begin + per, n), 1u);
    }
    return LaneRange(lane, n, WG_SIZE);
}

// The lane whose lane_range(·, n) holds item i < n.
fn item_lane(i: u32, n: u32) -> u32 {
    if (LANE_BLOCKS) {
        return i / max((n + WG_SIZE - 1u) / WG_SIZE, 1u);
    }
    return i % WG_SIZE;
}

// The index of a workgroup in a dispatch over a 2-D grid (kernels/mod.rs's grid():
// more rows than one dimension holds continue in y); one workgroup per row.
fn grid_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Where row r of a tensor starts, in elements of its bound window (view.rs's
// RowLayout, as LayoutParams of src/shader/abi/): rows are grouped in sequences of rows_per_seq
// rows.
fn row_start(l: LayoutParams, row: u32) -> u32 {
    let seq = row / l.rows_per_seq;
    return l.offset + seq * l.seq_stride + (row - seq * l.rows_per_seq) * l.row_stride;
}

const LOWEST: f32 = -3.40282346638528859812e+38;

// NaN (the log-prob of an id outside the vocabulary) and -inf (entries past a row's
// end). WGSL rejects a constant expression that evaluates to NaN or ±inf, and the
// browser's compiler (Tint) enforces it, so the bits go through private variables and
// become floats at run time.
var<private> QUIET_NAN_BITS: u32 = 0x7fc00000u;
var<private> NEG_INF_BITS: u32 = 0xff800000u;
var<private> POS_INF_BITS: u32 = 0x7f800000u;

fn quiet_nan() -> f32 {
    return bitcast<f32>(QUIET_NAN_BITS);
}

fn neg_inf() -> f32 {
    return bitcast<f32>(NEG_INF_BITS);
}

fn pos_inf() -> f32 {
    return bitcast<f32>(POS_INF_BITS);
}

// Tested on the bits: some drivers (llvmpipe on GL) evaluate `NaN > 0.0` as true, and
// a NaN must never be clamped into a plausible number.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// f32 → u32 with the same order (−inf smallest); NaN largest.
fn order_key(v: f32) -> u32 {
    if (is_nan(v)) {
        return 0xffffffffu;
    }
    let u = bitcast<u32>(v);
    return select(u | 0x80000000u, ~u, (u >> 31u) == 1u);
}

fn key_value(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// docs/MATH.md#bad-input: mask values >= 0 weight linearly, and a mask that is
// negative, NaN or ±inf is bad input on any row. A row is in the loss when its mask is
// finite and > 0 (finiteness tested on the bits: a driver's compare may take a NaN as >
// 0, and +inf would make the weights inf · 0).
fn mask_in(m: f32) -> bool {
    return is_finite(m) && m > 0.0;
}

fn mask_bad(m: f32) -> bool {
    return !is_finite(m) || m < 0.0;
}

// The clamps of docs/MATH.md (the ±20 of a log-ratio, the KL's ±10) keep a NaN a NaN:
// GPUs' min and max return their non-NaN operand, which would turn a bad log-prob into
// a plausible number. ±inf are clamped as the formulas say (docs/MATH.md#bad-input).
fn clamp_keep_nan(x: f32, lo: f32, hi: f32) -> f32 {
    return select(clamp(x, lo, hi), x, is_nan(x));
}

struct RowAcc {
    m: f32,
    s: f32,
    t: f32,
}

fn acc_empty() -> RowAcc {
    return RowAcc(LOWEST, 0.0, 0.0);
}

// The same partial row expressed relative to a new maximum m_new >= a.m.
fn acc_rescale(a: RowAcc, m_new: f32) -> RowAcc {
    // equal maxima need no shift, and +inf - +inf would be NaN: a row holding +inf
    // keeps lse = +inf and the entropy of the +inf entries (log of their count)
    let d = select(a.m - m_new, 0.0, a.m == m_new);
    let r = exp(d);
    // when r underflows to 0 the term is 0, and d may be -inf (0 * -inf = NaN)
    let shift = select(r * a.s * d, 0.0, r == 0.0);
    return RowAcc(m_new, a.s * r, r * a.t + shift);
}

// One element into the accumulator with a single exp and no branch (a data-dependent
// branch diverges across SIMD lanes): with d = z - m, exp(-|d|) is the new term when
// z <= m, and the factor that rescales the old terms when z is the new maximum.
fn acc_push(a: RowAcc, z: f32) -> RowAcc {
    // equal values (+inf twice included) are an ordinary term: d = 0, not inf - inf
    let d = select(z - a.m, 0.0, z == a.m);
    let e = exp(-abs(d));
    let up = d > 0.0;
    // when e underflows to 0 its product with d (possibly ±inf) is 0, not NaN;
    // a NaN z makes d and e NaN, so s becomes NaN and reaches every output
    let s = select(a.s + e, a.s * e + 1.0, up);
    let t = select(a.t + select(e * d, 0.0, e == 0.0), select(e * (a.t - a.s * d), 0.0, e == 0.0), up);
    return RowAcc(select(a.m, z, up), s, t);
}

fn acc_combine(a: RowAcc, b: RowAcc) -> RowAcc {
    let m = max(a.m, b.m);
    let x = acc_rescale(a, m);
    let y = acc_rescale(b, m);
    return RowAcc(m, x.s + y.s, x.t + y.t);
}

// log s. s >= 1 once any entry above -inf was seen (the maximum contributes
// exp(0) = 1), so rounding below 1 is pinned to log 1 = 0; s = 0 (every entry -inf)
// gives -inf, and a NaN s stays NaN (select, not max).
fn acc_log_s(a: RowAcc) -> f32 {
    return select(log(a.s), 0.0, a.s > 0.0 && a.s <= 1.0 && !is_nan(a.s));
}

fn acc_lse(a: RowAcc) -> f32 {
    return a.m + acc_log_s(a);
}

fn acc_entropy(a: RowAcc) -> f32 {
    return acc_log_s(a) - a.t / a.s;
}

// log p of a logit z (already divided by the temperature) of the row; never above 0,
// even when the compiler contracts z - m into an fma, and NaN stays NaN.
fn acc_logp(a: RowAcc, z: f32) -> f32 {
    let lp = (z - a.m) - acc_log_s(a);
    return select(lp, 0.0, lp > 0.0 && !is_nan(lp));
}

// ---- The sweeps' accumulator: a lane's share of a row, eight logits at a time --------
//
// A sweep hands a lane its logits in groups of GROUP (logits/*.wgsl's load_group).
// The lane keeps its partial row in base 2 about the largest raw logit mx it has seen:
// with c2 = log2(e)/τ and d = x·c2 − mx·c2, s = Σ 2^d and t = Σ 2^d·d, so 2^d is
// e^(z − m) and t·ln 2 is RowAcc's t. Per group one maximum and one rescale (not one
// per logit), then per logit one fma, one exp2, one add and one fused multiply-add,
// with no branch: the work the GPU issues per logit, which bounds the row kernels far
// more than memory does.
//
// mx·c2 is rounded once per group; that shifts every d of the group by the same ε,
// which cancels in the entropy and moves lse by ε·ln 2 ≤ |z|·2^-25 (within the
// tolerances of docs/NUMERICS.md, which grow with |z| alike).
//
// The hot loop has no case for non-finite logits. Its result shows when it went
// wrong, and the lane then takes its logits again one at a time with RowAcc
// (lane_exact): a +inf or a logit so large that mx·c2 overflows leaves mx·c2
// non-finite, and a −inf makes t NaN through 0·(−inf) while s stays a number (a NaN
// logit makes s NaN, which is already the answer). Those rows are rare; the others
// never pay for them.

const GROUP: u32 = 8u;
const LOG2E: f32 = 1.44269504088896340736;
const LN2: f32 = 0.693147180559945309417;

// Eight logits (a group), as two quads.
struct Group {
    a: vec4<f32>,
    b: vec4<f32>,
}

struct LaneAcc {
    mx: f32,
    s: f32,
    t: f32,
}

fn lane_empty() -> LaneAcc {
    return LaneAcc(LOWEST, 0.0, 0.0);
}

fn group_max(g: Group) -> f32 {
    let m = max(g.a, g.b);
    return max(max(m.x, m.y), max(m.z, m.w));
}

// The first n logits of g, the others −inf (a row's last, partial group).
fn group_head(g: Group, n: u32) -> Group {
    let i = vec4<u32>(0u, 1u, 2u, 3u);
    let ninf = vec4<f32>(neg_inf());
    return Group(select(ninf, g.a, i < vec4<u32>(n)), select(ninf, g.b, i + 4u < vec4<u32>(n)));
}

// The first n logits of group g into the lane's partial row (n = GROUP but for a
// row's last group, whose padding is −inf): the old terms rescaled to the new maximum
// once (exactly as they were when it stays; the cap on δ keeps an empty lane's 0·∞
// out), then the group's. The padding's d is LOWEST, so its e·d is 0, not NaN; with
// n = GROUP the selects fold away.
fn lane_add(acc: LaneAcc, g: Group, n: u32, c2: f32) -> LaneAcc {
    let m_new = max(acc.mx, group_max(g));
    let delta = min((m_new - acc.mx) * c2, 1e30);
    let r = exp2(-delta);
    // a lane that has seen only −inf keeps mx = LOWEST, whose ·c2 would be −inf: its
    // d would be NaN (−inf + inf) and hide in s, where it stands for a NaN logit
    let m2 = max(m_new * c2, LOWEST);
    let i = vec4<u32>(0u, 1u, 2u, 3u);
    let low = vec4<f32>(LOWEST);
    let da = select(low, fma(g.a, vec4<f32>(c2), vec4<f32>(-m2)), i < vec4<u32>(n));
    let db = select(low, fma(g.b, vec4<f32>(c2), vec4<f32>(-m2)), i + 4u < vec4<u32>(n));
    let ea = exp2(da);
    let eb = exp2(db);
    let e = ea + eb;
    let t = fma(ea, da, eb * db);
    let s_new = fma(r, acc.s, (e.x + e.y) + (e.z + e.w));
    let t_new = fma(r, fma(-delta, acc.s, acc.t), (t.x + t.y) + (t.z + t.w));
    return LaneAcc(m_new, s_new, t_new);
}

// Whether the hot loop's result holds (see above).
fn lane_ok(acc: LaneAcc, c2: f32) -> bool {
    let finite_max = abs(acc.mx * c2) < pos_inf();
    return finite_max && !(is_nan(acc.t) && !is_nan(acc.s));
}

// The lane's partial row in the units of RowAcc (m = mx/τ, t in nats), which the
// workgroup tree and the shards' partials combine.
fn lane_finish(acc: LaneAcc, inv_tau: f32) -> RowAcc {
    return RowAcc(acc.mx * inv_tau, acc.s, acc.t * LN2);
}

// The eight logits of g (already /τ) into a RowAcc one at a time: the exact path of
// the rare rows (prelude's acc_push: +inf takes the mass, −inf none, NaN spreads).
fn acc_push_group(a: RowAcc, g: Group, inv_tau: f32) -> RowAcc {
    var acc = a;
    let z = array<f32, 8>(g.a.x, g.a.y, g.a.z, g.a.w, g.b.x, g.b.y, g.b.z, g.b.w);
    for (var j = 0u; j < 8u; j++) {
        acc = acc_push(acc, z[j] * inv_tau);
    }
    return acc;
}
