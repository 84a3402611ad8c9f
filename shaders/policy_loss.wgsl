// The fused forward + backward of the policy loss, one workgroup per logits row:
//
//   sweep 1  read the row once: online max / sum / entropy accumulator (prelude.wgsl)
//   scalars  log-prob, entropy, the token's loss L_t and G_t = ∂L_t/∂logp (docs/MATH.md)
//   sweep 2  read the row again (mostly from cache) and write its gradient once:
//            ∂Loss/∂x_v = (w/τ)·[G·(1[v = y] − p_v) + γ·p_v·(z_v − Σ p z)]
//
// GSPO needs every log-prob of a sequence before any token's loss, so it runs this
// kernel twice: STATS (sweep 1 only, statistics to `rowout`), then, after
// gspo_ratio.wgsl, LOSS (statistics read back, sweep 2). Everything else is one launch.
//
// Per-row scalars are computed by every lane (they are a handful of flops), so the
// whole workgroup has G for the gradient sweep without another barrier.
//
// requires: BIAS_KL, HAS_OLD, HAS_REF, HAS_ROLLOUT, HAS_SELECTION, KL_STRAIGHT, LOG2E
// requires: LOWEST, Lanes, MODE_CISPO, MODE_CLIP_COV, MODE_DPPO_KL, MODE_DPPO_TV
// requires: MODE_DRO, MODE_GEO_MEAN, MODE_GSPO, MODE_KL_COV, MODE_PPO, MODE_SAPO
// requires: MODE_VESPO, OFF_POLICY, OUT_ENTROPY, OUT_LOGP, OUT_LSE, PHASE_LOSS
// requires: PHASE_STATS, POLICY_VIA_SEQ, PRIMITIVE, Params, RENORMALIZE, ROWOUT_FLOATS
// requires: ROW_BAD_ID, ROW_NOT_KEPT, kept_count, kept_pair, kept_target, sampler_row
// requires: store_elem
// requires: ROW_CLIPPED, ROW_DUAL, ROW_NONFINITE, SEQ_ADDEND, SEQ_RATIO, Term, WG_SIZE
// requires: acc_entropy, acc_logp, acc_lse, cap1, cap4, cap_chain4, clamp_keep_nan
// requires: clipped_term, grad_sweep, grid_index, is_finite, is_nan, kl_term, lane_id
// requires: lane_range
// requires: load_logit, mask_bad, mask_in, quiet_nan, reduce_row, row_scale, row_start
// requires: sampler_flags, sampler_inv_tau, sampler_tau_slot, sapo_gate, stats_sweep
// requires: vespo_phi_a

// Params, the uniform block: declared in src/shader/abi/policy_loss.rs

// and its phases (PHASE_*), flags (HAS_*, RENORMALIZE), mode codes (MODE_*) and KL
// estimators (KL_*); the row flags written to rowout (ROW_*) are src/shader/abi/mod.rs's

@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
// per row: mask, advantage, old log-prob, ref log-prob (prepare.wgsl)
@group(0) @binding(3) var<storage, read> rowin: array<vec4<f32>>;
// per sequence: weight factor c_b (w_r = m_r·c_b), GSPO ratio s_b, the entropy mask's
// renormalised c'_b
@group(0) @binding(4) var<storage, read> seqinfo: array<vec4<f32>>;
// per row: logp, entropy, lse, w·L, kl, flags, bad id, τ (read by reduce.wgsl)
@group(0) @binding(5) var<storage, read_write> rowout: array<array<f32, ROWOUT_FLOATS>>;
// two vec4 a row from select.wgsl: (-, q, -, -) and (selected, kept, -, -)
@group(0) @binding(7) var<storage, read> rowaux: array<vec4<f32>>;

struct GradCoefs {
    vocab: u32,
    // the target's column in this launch's columns (wrapping: another shard's is none)
    y: u32,
    // w / τ; 0 for a row that must get a zero gradient (then nothing is read)
    scale: f32,
    // w/τ·G, added at the target
    at_target: f32,
    // ∂Loss/∂x_v = at_target·1[v = y] + p_v·(c0 + c1x·x_v), p_v = 2^(x_v·c2 − lse2):
    // c0 = (w/τ)·(−G − γ·μ), c1x = (w/τ)·γ/τ, c2 = log2(e)/τ, lse2 = lse·log2(e); one
    // exp2 and three fused multiply-adds or multiplies per logit (grad_quad)
    c0: f32,
    c1x: f32,
    c2: f32,
    lse2: f32,
    // x below lo has p = 0 and would make c1x·x overflow to ∓inf (0·∞ = NaN): it is
    // raised to lo, where |c1x·lo| ≤ FLT_MAX/2
    lo: f32,
    // for grad_exact: the natural lse, and 1/τ_r
    lse: f32,
    inv_tau: f32,
    // grad_quad holds, and gives a number for every logit of the row: lse2 finite,
    // and c0 and c1x·lse so far below FLT_MAX that no fma overflows into 0·∞; else
    // (±inf or NaN logits, a NaN G, absurd magnitudes) the exact loop
    fast: bool,
}

// `gamma` is the entropy's coefficient γ (−b for the primitive) and `c` the primitive's
// ∂L/∂lse, which adds c·p_v (0 in a loss: the term then is not there at all)
fn grad_coefs(vocab: u32, y: u32, scale: f32, big_g: f32, lse: f32, mu: f32, inv_tau: f32, gamma: f32, c: f32) -> GradCoefs {
    let c1x = scale * gamma * inv_tau;
    let c0 = select(scale * (-big_g - gamma * mu), scale * (-big_g - gamma * mu + c), c != 0.0);
    let lse2 = lse * LOG2E;
    return GradCoefs(
        vocab,
        y,
        scale,
        scale * big_g,
        c0,
        c1x,
        inv_tau * LOG2E,
        lse2,
        LOWEST / max(2.0, 2.0 * abs(c1x)),
        lse,
        inv_tau,
        is_finite(lse2) && is_finite(2.0 * c0) && is_finite(2.0 * c1x * lse),
    );
}

// The gradient of four logits x of a row, the target's term apart, at their image s
// under the sampler's map (sampler/*.wgsl; x itself with every option off), times the
// map's slope. −inf has p = 0, hence 0; a NaN row (lse NaN) gives NaN.
fn grad_quad(x: vec4<f32>, k: GradCoefs) -> vec4<f32> {
    let s = cap4(x);
    let p = exp2(fma(s, vec4<f32>(k.c2), vec4<f32>(-k.lse2)));
    return cap_chain4(s, p * fma(max(s, vec4<f32>(k.lo)), vec4<f32>(k.c1x), vec4<f32>(k.c0)));
}

// grad_quad in natural units, for the rare rows whose lse·log2(e) overflows (±inf
// logits, or |lse| near FLT_MAX): p = e^(z − lse), and 0 where p is.
fn grad_exact(x: vec4<f32>, k: GradCoefs) -> vec4<f32> {
    let s = cap4(x);
    let p = exp(s * k.inv_tau - vec4<f32>(k.lse));
    let g = p * (vec4<f32>(k.c0) + k.c1x * s);
    return cap_chain4(s, select(g, vec4<f32>(0.0), p == vec4<f32>(0.0)));
}

// The target's own term w/τ·G at logits x (the sweeps add it where v = y), times the
// sampler's slope there.
fn at_target4(x: vec4<f32>, k: GradCoefs) -> vec4<f32> {
    return cap_chain4(cap4(x), vec4<f32>(k.at_target));
}

fn grad_any(x: vec4<f32>, k: GradCoefs) -> vec4<f32> {
    if (k.fast) {
        return grad_quad(x, k);
    }
    return grad_exact(x, k);
}

// The token's log ratio d = logp − old_logp (0 on-policy), r = exp(clamp(d, ±20)),
// and whether that clamp is active.
struct Ratio {
    d: f32,
    r: f32,
    clamped: bool,
}

fn token_ratio(inputs: vec4<f32>, logp: f32) -> Ratio {
    if ((params.flags & HAS_OLD) == 0u) {
        return Ratio(0.0, 1.0, false);
    }
    let d = logp - inputs.z;
    return Ratio(d, exp(clamp_keep_nan(d, -20.0, 20.0)), abs(d) > 20.0);
}

// The policy term l_t and g_t (docs/MATH.md#the-per-token-loss) of the row at `at` (of
// sequence `seq`) in the configured mode.
fn policy_term(inputs: vec4<f32>, logp: f32, at: u32, seq: u32) -> Term {
    let a = inputs.y;
    let mode = params.mode;
    if (mode == MODE_GSPO) {
        return clipped_term(params.clip, params.flags, a, seqinfo[seq].y, true);
    }
    var rt = token_ratio(inputs, logp);
    if ((params.flags & SEQ_RATIO) != 0u) {
        // TRL's sequence level: the sequence's ratio in every value and decision; its
        // gradient goes through the mean (seq_terms.wgsl's addend)
        rt.r = seqinfo[seq].y;
    }
    let r = rt.r;
    if (mode == MODE_PPO) {
        var t = clipped_term(params.clip, params.flags, a, r, true);
        t.g = select(t.g, 0.0, (params.flags & POLICY_VIA_SEQ) != 0u);
        return t;
    }
    if (mode == MODE_CISPO) {
        // the clipped ratio as a detached weight
        let c = clamp_keep_nan(r, 1.0 - params.clip.low, 1.0 + params.clip.high);
        return Term(-c * a * logp, -c * a, select(0.0, f32(ROW_CLIPPED), c != r), false);
    }
    if (mode == MODE_SAPO) {
        let gate = sapo_gate(params.tau_pos, params.tau_neg, a, r);
        let sig = gate.y;
        let cut = rt.clamped || (params.flags & POLICY_VIA_SEQ) != 0u;
        let g = select(-4.0 * sig * (1.0 - sig) * r * a, 0.0, cut);
        return Term(-(4.0 / gate.x) * sig * a, g, 0.0, false);
    }
    if (mode == MODE_CLIP_COV || mode == MODE_KL_COV) {
        return cov_term(a, rt, at);
    }
    return term_2026(a, logp, inputs.z, rt, seq);
}

// clip_cov and kl_cov: ppo_clip without dual-clip, or −A·r, changed on the tokens
// select.wgsl chose.
fn cov_term(a: f32, rt: Ratio, at: u32) -> Term {
    var selected = false;
    if ((params.flags & HAS_SELECTION) != 0u) {
        selected = rowaux[2u * at + 1u].x > 0.0;
    }
    if (params.mode == MODE_CLIP_COV) {
        var t = clipped_term(params.clip, params.flags, a, rt.r, false);
        if (selected) {
            t.l = 0.0;
            t.g = 0.0;
        }
        return t;
    }
    var t = Term(-a * rt.r, -a * rt.r, 0.0, false);
    if (selected) {
        t.l += params.kappa * abs(rt.d);
        t.g += params.kappa * sign(rt.d);
    }
    return t;
}

// The modes of docs/MATH.md#policy-modes-of-2026 (geo_mean, dppo_tv/kl, dro, vespo),
// and reinforce / gpg.
fn term_2026(a: f32, logp: f32, old: f32, rt: Ratio, seq: u32) -> Term {
    let mode = params.mode;
    let d = rt.d;
    if (mode == MODE_GEO_MEAN) {
        // every token of b has l = −Ā_b·ρ_b (seq_terms.wgsl); it moves where its own
        // log ratio was not clipped in the advantage's direction
        let lo = -params.clip.low;
        let hi = params.clip.high;
        let neg_ab_rho = -seqinfo[seq].y;
        let moves = (a > 0.0 && d <= hi) || (a < 0.0 && d >= lo);
        let outside = d < lo || d > hi;
        let fl = select(0.0, f32(ROW_CLIPPED), a > 0.0 && outside) + select(0.0, f32(ROW_DUAL), a < 0.0 && outside);
        return Term(neg_ab_rho, select(0.0, neg_ab_rho, moves), fl, false);
    }
    if ((mode == MODE_DPPO_TV || mode == MODE_DPPO_KL) && (params.flags & HAS_OLD) != 0u) {
        let keep = dppo_keep(a, logp, old);
        let c = min(rt.r, params.clip.c) * select(0.0, 1.0, keep);
        let fl = select(f32(ROW_CLIPPED), 0.0, keep) + select(0.0, f32(ROW_DUAL), keep && rt.r > params.clip.c);
        return Term(-c * a * logp, -c * a, fl, false);
    }
    if (mode == MODE_DRO) {
        let half_beta = 0.5 * params.dro_beta;
        return Term(-(a * logp - half_beta * d * d), -a + params.dro_beta * d, 0.0, false);
    }
    if (mode == MODE_VESPO) {
        let phi_a = vespo_phi_a(params.vespo, a, seqinfo[seq].y);
        return Term(-phi_a * logp, -phi_a, 0.0, false);
    }
    // reinforce, gpg, and dppo on-policy
    return Term(-a * logp, -a, 0.0, false);
}

// DPPO's binary mask v: whether the token's probability moved less than the threshold
// (in total variation, or in the binary KL) in the advantage's direction.
fn dppo_keep(a: f32, logp: f32, old: f32) -> bool {
    let p = exp(logp);
    let p_old = exp(old);
    if (params.mode == MODE_DPPO_TV) {
        return select(p - p_old >= -params.clip.low, p - p_old <= params.clip.high, a > 0.0);
    }
    let tail = log((1.0 - p_old + 1e-8) / (1.0 - p + 1e-8));
    let div = p_old * (old - logp) + (1.0 - p_old) * tail;
    return select(div <= params.clip.low || p >= p_old, div <= params.clip.high || p <= p_old, a > 0.0);
}

// The KL term kl' (the estimator, times the ratio with the bias correction) and its
// derivative in logp; the sequence ratio's share of the derivative is seq_terms.wgsl's.
fn kl_of(inputs: vec4<f32>, logp: f32, seq: u32) -> vec2<f32> {
    let kl = kl_term(params.kl_type, (params.flags & KL_STRAIGHT) != 0u, logp, inputs.w);
    if ((params.flags & BIAS_KL) == 0u) {
        return kl;
    }
    if ((params.flags & SEQ_RATIO) != 0u || params.mode == MODE_GSPO) {
        let s = seqinfo[seq].y;
        return vec2<f32>(kl.x * s, s * kl.y);
    }
    let rt = token_ratio(inputs, logp);
    return vec2<f32>(kl.x * rt.r, rt.r * kl.y + select(rt.r * kl.x, 0.0, rt.clamped));
}

// Whether a masked-in row reads a NaN (docs/MATH.md#bad-input): its advantage, its old or
// ref log-prob, its rollout weight q (NaN from its own sampler log-prob or, per
// sequence, a neighbour's) or its sequence's value (NaN from any input of the
// sequence). Tested on the bits: the compares of the clipped objective may turn a NaN
// ratio into a clipped, finite term.
fn reads_nan(inputs: vec4<f32>, at: u32, seq: u32) -> bool {
    var nan = is_nan(inputs.y);
    if ((params.flags & HAS_OLD) != 0u) {
        nan = nan || is_nan(inputs.z);
    }
    if ((params.flags & HAS_REF) != 0u) {
        nan = nan || is_nan(inputs.w);
    }
    if ((params.flags & HAS_ROLLOUT) != 0u) {
        nan = nan || is_nan(rowaux[2u * at].y);
    }
    // a sequence value (s_b, GMPO's Ā_b·ρ_b, VESPO's L_b) is NaN from any NaN input of
    // its sequence: every row of it reads that NaN
    let mode = params.mode;
    if (mode == MODE_GSPO || mode == MODE_GEO_MEAN || mode == MODE_VESPO || (params.flags & SEQ_RATIO) != 0u) {
        nan = nan || is_nan(seqinfo[seq].y);
    }
    return nan;
}

// A token's loss L_t, its G = ∂L_t/∂logp, its KL term, flags and entropy coefficient γ;
// for the primitive also its ∂L/∂lse, and whether its log-prob is read at all.
struct TokenLoss {
    l: f32,
    g: f32,
    kl: f32,
    flags: f32,
    gamma: f32,
    c: f32,
    reads_logp: bool,
}

fn token_loss(inputs: vec4<f32>, st: Stats, at: u32, seq: u32) -> TokenLoss {
    if ((params.flags & PRIMITIVE) != 0u) {
        return primitive_loss(inputs, st);
    }
    let term = policy_term(inputs, st.logp, at, seq);
    let factor = term_factor(at, seq);
    var kl = vec2<f32>(0.0, 0.0);
    if ((params.flags & HAS_REF) != 0u) {
        kl = kl_of(inputs, st.logp, seq);
    }
    let gamma = params.entropy_coeff;
    var big_g = factor * term.g + params.kl_coef * kl.y;
    if ((params.flags & SEQ_ADDEND) != 0u) {
        // the sequence ratio's gradient through the mean, per unit of w (seq_terms.wgsl)
        big_g += seqinfo[seq].w;
    }
    let l = factor * term.l + params.kl_coef * kl.x - gamma * st.entropy;
    return TokenLoss(l, big_g, kl.x, term.flags, gamma, 0.0, true);
}

// The log-prob primitive (docs/MATH.md#the-log-prob-primitive): rowin holds (read, −a,
// b, c) (prepare.wgsl), the caller's upstream ∂L/∂logp, ∂L/∂H, ∂L/∂lse. Its "loss" is
// the linearisation a·logp + b·H + c·lse, whose gradient is the vector-Jacobian
// product: G = a, γ = −b, and c·p_v. The log-prob is read only where a ≠ 0 (elsewhere
// the target may be padding).
fn primitive_loss(inputs: vec4<f32>, st: Stats) -> TokenLoss {
    let a = -inputs.y;
    let reads_logp = a != 0.0;
    let l = a * select(0.0, st.logp, reads_logp) + inputs.z * st.entropy + inputs.w * st.lse;
    return TokenLoss(l, a, 0.0, 0.0, -inputs.z, inputs.w, reads_logp);
}

// A row's log-prob, entropy and lse: swept here (PHASE_STATS), or read from rowout
// where an earlier launch (statistics first, or combine) wrote them.
struct Stats {
    logp: f32,
    entropy: f32,
    lse: f32,
}

fn row_statistics(lanes: Lanes, lane: u32, at: u32, xbase: u32, y: u32, inv_tau: f32) -> Stats {
    if ((params.phase & PHASE_STATS) == 0u) {
        let st = rowout[at];
        return Stats(st[OUT_LOGP], st[OUT_ENTROPY], st[OUT_LSE]);
    }
    let acc = stats_sweep(lane, xbase, params.vocab, inv_tau);
    // read before the barrier in reduce_row: in place, sweep 2 of a faster lane may
    // overwrite this logit with its gradient once the barrier is passed
    let z_y = cap1(load_logit(xbase + min(y, params.vocab - 1u))) * inv_tau;
    let total = reduce_row(lanes, acc);
    // an id outside the row (allowed where the mask is 0) gives NaN
    var logp = quiet_nan();
    if (y < params.vocab) {
        logp = acc_logp(total, z_y);
    }
    return Stats(logp, acc_entropy(total), acc_lse(total));
}

// The policy term's share of the row's weight w: the rollout weight q, the entropy
// mask e, and, renormalised, c'_b / c_b (exactly 1 without any of them, so the other
// modes keep their bits).
fn term_factor(at: u32, seq: u32) -> f32 {
    var factor = 1.0;
    if ((params.flags & HAS_ROLLOUT) != 0u && params.mode != MODE_VESPO) {
        // geo_mean weighs by its sequence's geometric mean of q (seq_terms.wgsl); vespo
        // took q into its sequence weight
        factor = select(rowaux[2u * at].y, seqinfo[seq].w, params.mode == MODE_GEO_MEAN);
    }
    if ((params.flags & HAS_SELECTION) != 0u) {
        factor *= rowaux[2u * at + 1u].y;
    }
    if ((params.flags & OFF_POLICY) != 0u) {
        factor *= rowaux[2u * at + 1u].z;
    }
    if ((params.flags & RENORMALIZE) != 0u) {
        factor *= seqinfo[seq].z / seqinfo[seq].x;
    }
    return factor;
}

@compute @workgroup_size(WG_SIZE)
fn policy_loss(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lanes: Lanes,
) {
    let row = params.row_base + grid_index(wid, nwg);
    if (row >= params.row_end) {
        return;
    }
    let lane = lane_id(lanes);
    let at = params.part_row + row;
    let seq = params.part_seq + row / params.x.rows_per_seq;
    let xbase = row_start(params.x, row);
    let y = targets[row_start(params.y, row)];
    let inputs = rowin[at];
    let m = inputs.x;
    // the row's 1/τ (sampler/*.wgsl: the call's scalar unless temperatures are given),
    // and a computed kept set's θ (sampler/kept.wgsl)
    let inv_tau = sampler_inv_tau(row, params.inv_tau);
    sampler_row(row, inv_tau);
    let st = row_statistics(lanes, lane, at, xbase, y, inv_tau);
    let logp = st.logp;
    let entropy = st.entropy;
    let lse = st.lse;
    if ((params.phase & PHASE_LOSS) == 0u) {
        if (lane == 0u) {
            rowout[at] = array<f32, ROWOUT_FLOATS>(logp, entropy, lse, 0.0, 0.0, 0.0, 0.0, 0.0);
        }
        return;
    }

    // the token's loss and its G = ∂L/∂logp
    let t = token_loss(inputs, st, at, seq);
    var loss_t = t.l;
    var big_g = t.g;
    let masked_in = mask_in(m);
    let bad_mask = mask_bad(m);
    // a masked-in id outside the vocabulary has no log-prob, a NaN input no value, and a
    // bad mask no weight: the row's loss and gradient are NaN (the reduce kernel
    // reports the row), never a plausible number
    let bad_y = y >= params.vocab_total && t.reads_logp;
    // a target the sampler could not have drawn (outside its kept set)
    let not_kept = !bad_y && t.reads_logp && !kept_target(row);
    if (bad_y || not_kept || bad_mask || (masked_in && reads_nan(inputs, at, seq))) {
        loss_t = quiet_nan();
        big_g = loss_t;
    }
    // a row with a bad mask is outside every sum but the loss: the weight 1 carries its
    // NaN there and into its gradient
    let w = select(select(0.0, m * seqinfo[seq].x, masked_in), 1.0, bad_mask);
    let nonfinite = masked_in && !(is_finite(lse) && !is_nan(entropy));
    let bad_id = masked_in && bad_y;
    let row_flags = t.flags + select(0.0, f32(ROW_NONFINITE), nonfinite) + select(0.0, f32(ROW_BAD_ID), bad_id) + select(0.0, f32(ROW_NOT_KEPT), masked_in && not_kept);
    let flags = sampler_flags(row_flags, row, masked_in);

    if (lane == 0u) {
        // in the order of the OUT_* slots (src/shader/abi/mod.rs)
        rowout[at] = array<f32, ROWOUT_FLOATS>(
            logp,
            entropy,
            lse,
            select(0.0, w * loss_t, masked_in || bad_mask),
            select(0.0, t.kl, masked_in),
            select(0.0, flags, masked_in),
            bitcast<f32>(y),
            sampler_tau_slot(row),
        );
    }

    let gbase = row_start(params.g, row);
    // the target's column in this launch's columns (wrapping: a target of another
    // shard is never matched)
    let k = grad_coefs(params.vocab, y - params.col_offset, row_scale(w, inv_tau), big_g, lse, lse - entropy, inv_tau, t.gamma, t.c);
    let kept_n = kept_count(lane, row);
    if (kept_n == 0u) {
        grad_sweep(lane, xbase, gbase, k);
    } else {
        kept_gradient(lane, row, kept_n, xbase, gbase, k, t.c);
    }
}

// The gradient of a row with a given kept set (sampler/kept.wgsl): zeros over the
// row's columns, then each kept id of these columns from its pair. The two passes
// write even and then odd columns: a 16-bit value shares its 32-bit word with its
// neighbour, and two lanes must never rewrite one word at the same time.
//
// A set of one token has p = 1 exactly: the policy and entropy terms cancel
// analytically, and only the primitive's ∂L/∂lse (`c`) is left, σ'·(w/τ)·c. Computed
// term by term, p = 2^(z·log2 e − lse·log2 e) would leave their rounding instead.
fn kept_gradient(lane: u32, row: u32, n: u32, xbase: u32, gbase: u32, k: GradCoefs, c: f32) {
    var zeros = k;
    zeros.scale = 0.0;
    grad_sweep(lane, xbase, gbase, zeros);
    // a row outside the loss keeps its zeros
    let r = lane_range(lane, select(n, 0u, k.scale == 0.0));
    for (var half = 0u; half < 2u; half++) {
        storageBarrier();
        for (var i = r.begin; i < r.end; i += r.step) {
            let p = kept_pair(row, i);
            // wrapping: an id of other columns is never matched
            let col = p.x - params.col_offset;
            if (col < k.vocab && ((gbase + col) & 1u) == half) {
                let x = vec4<f32>(bitcast<f32>(p.y));
                let at_y = select(0.0, at_target4(x, k).x, col == k.y);
                let alone = cap_chain4(cap4(x), vec4<f32>(k.scale * c)).x;
                store_elem(gbase + col, select(grad_any(x, k).x + at_y, alone, n == 1u));
            }
        }
    }
}
